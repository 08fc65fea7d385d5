//! The embedded demo model: a small AudioX trained and distilled by the project on its
//! procedural sound-event corpus (`audiox-train`), shipped inside the `audiox-demo` crate so
//! that `cargo add audiox` users get a model that makes sound with no download.
//!
//! It is **not** AudioX-Turbo: it knows beeps, clicks, knocks, chirps, thuds, bells, whooshes
//! and buzzes, their counts, pitch, order and onset times ("two knocks, then a low thud"), and
//! nothing else. Its files (bf16 safetensors, `config.json`, the T5 tokenizer) are embedded
//! with `include_bytes!` and loaded from memory ([`crate::MemoryCheckpoint`]).
//!
//! ```no_run
//! use audiox::{AudioX, Request};
//! let model = AudioX::demo()?;
//! let out = model.generate(Request::text("three high beeps").seed(1))?;
//! out.audio[0].write_wav("beeps.wav")?;
//! # Ok::<(), audiox::Error>(())
//! ```
//!
//! A build may carry no demo model: the `demo` feature (on by default) is off, or the
//! `audiox-demo` crate was built before the trained files existed. [`crate::AudioX::demo`] then
//! returns [`crate::Error::DemoModelMissing`], whose message says how to produce them;
//! [`is_available`] tells beforehand.

use audiox_core::{Error, Result};

use crate::memory::MemoryCheckpoint;

/// How [`crate::MemoryCheckpoint::label`] names the demo model in errors and load reports.
pub const LABEL: &str = "<audiox demo model>";

/// The most bytes the embedded files may take together (crates.io's 10 MB crate limit, less
/// headroom); checked by the `audiox-demo` crate's tests.
pub const SIZE_BUDGET: usize = 9_000_000;

/// Whether this build embeds the demo model.
pub fn is_available() -> bool {
    #[cfg(feature = "demo")]
    {
        audiox_demo::is_available()
    }
    #[cfg(not(feature = "demo"))]
    {
        false
    }
}

/// The demo model's files, in memory (nothing is copied: they point into the binary), or
/// [`Error::DemoModelMissing`] saying why there are none and how to produce them.
pub fn checkpoint() -> Result<MemoryCheckpoint> {
    #[cfg(feature = "demo")]
    {
        if !audiox_demo::is_available() {
            return Err(Error::DemoModelMissing {
                reason: audiox_demo::HOW_TO_PRODUCE.to_string(),
            });
        }
        let mut ckpt = MemoryCheckpoint::new(LABEL);
        for (path, bytes) in audiox_demo::FILES {
            ckpt.insert(*path, *bytes);
        }
        Ok(ckpt)
    }
    #[cfg(not(feature = "demo"))]
    {
        Err(Error::DemoModelMissing {
            reason: "audiox was built without its `demo` feature (on by default); enable it \
                     to embed the demo model"
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_and_the_checkpoint_agree() {
        match checkpoint() {
            Ok(ckpt) => {
                assert!(is_available());
                assert!(ckpt.contains("config.json"));
                assert!(ckpt.total_bytes() <= SIZE_BUDGET);
            }
            Err(Error::DemoModelMissing { reason }) => {
                assert!(!is_available());
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }

    #[cfg(feature = "demo")]
    #[test]
    fn the_budget_is_the_demo_crates() {
        assert_eq!(SIZE_BUDGET, audiox_demo::SIZE_BUDGET);
    }
}
