//! The embedded demo model: a small AudioX trained and distilled by the project on its
//! procedural sound-event corpus (`audiox-train`), shipped inside the `audiox-demo` crate (and
//! its rectified-flow teacher inside `audiox-demo-teacher`) so that `cargo add audiox` users get
//! a model that makes sound with no download.
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

/// The most bytes the embedded files of each of the two crates may take (crates.io's 10 MB
/// crate limit, less headroom): the student, VAE and T5 in `audiox-demo`, the teacher in
/// `audiox-demo-teacher`; checked by each crate's tests.
pub const SIZE_BUDGET: usize = 9_000_000;

/// The teacher's weight file in the official layout; the demo carries it in a crate of its own.
pub const TEACHER_FILE: &str = "pretrained_ckpt/pretrained_ckpt.safetensors";

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

/// Whether this build embeds the demo model's teacher too (`audiox-demo-teacher` built with its
/// assets); without it the demo runs its student only.
pub fn has_teacher() -> bool {
    #[cfg(feature = "demo")]
    {
        audiox_demo::is_available() && audiox_demo_teacher::is_available()
    }
    #[cfg(not(feature = "demo"))]
    {
        false
    }
}

/// The demo model's files, in memory (nothing is copied: they point into the binary): the
/// student, VAE, T5 and configs, and the teacher when [`has_teacher`]. Or
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
        for (path, bytes) in audiox_demo::FILES
            .iter()
            .chain(audiox_demo_teacher::FILES.iter())
        {
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
                assert_eq!(ckpt.contains(TEACHER_FILE), has_teacher());
                let teacher = ckpt.get(TEACHER_FILE).map_or(0, <[u8]>::len);
                assert!(teacher <= SIZE_BUDGET);
                assert!(ckpt.total_bytes() - teacher <= SIZE_BUDGET);
            }
            Err(Error::DemoModelMissing { reason }) => {
                assert!(!is_available());
                assert!(!has_teacher());
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }

    #[cfg(feature = "demo")]
    #[test]
    fn the_budget_and_the_teacher_file_are_the_demo_crates() {
        assert_eq!(SIZE_BUDGET, audiox_demo::SIZE_BUDGET);
        assert_eq!(SIZE_BUDGET, audiox_demo_teacher::SIZE_BUDGET);
        assert_eq!(TEACHER_FILE, audiox_demo_teacher::TEACHER_FILE);
    }
}
