//! The small demo model of [audiox](https://crates.io/crates/audiox), embedded in the binary.
//!
//! A small AudioX (same architecture and config schema as AudioX-Turbo, far fewer parameters)
//! trained on the project's procedural sound-event corpus by `audiox-train`: beeps, clicks,
//! knocks, chirps, thuds, bells, whooshes and buzzes, with counts, pitch, order and onset times
//! from the caption. It is **not** AudioX-Turbo and knows nothing else. The files (bf16
//! safetensors, `config.json`, the tokenizer) are those of a checkpoint folder in the official
//! layout, embedded with `include_bytes!`: loading them needs no file system and no network.
//!
//! The teacher the student was distilled from is in the crate `audiox-demo-teacher` (the two
//! denoisers together are over crates.io's 10 MB crate limit).
//!
//! This crate only holds the bytes; `audiox` (feature `demo`, on by default) loads them
//! (`audiox` depends on this crate, not the other way round, hence no doctest here):
//!
//! ```ignore
//! let model = audiox::AudioX::demo()?; // Error::DemoModelMissing when built without assets
//! # Ok::<(), audiox::Error>(())
//! ```
//!
//! The files come from `assets/` (see `assets/README.md`), or from the folder named by the
//! environment variable `AUDIOX_DEMO_ASSETS` at build time. A build without them has an empty
//! [`FILES`] and [`is_available`] is false.
#![deny(missing_docs)]

/// Every embedded file: its path in the official checkpoint layout (`config.json`,
/// `audiox_turbo/audiox_turbo.safetensors`, `t5-base/tokenizer.json`, ...; not the teacher's
/// `pretrained_ckpt/`) and its bytes, sorted by path. Empty when the crate was built without assets.
pub static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/files.rs"));

/// The most bytes the embedded files may take together: crates.io refuses crates over 10 MB
/// (compressed), and the rest of the crate and headroom take the other megabyte. Checked by the
/// crate's tests; CI checks the packaged `.crate` itself.
pub const SIZE_BUDGET: usize = 9_000_000;

/// What to do when the demo model is missing (the text of `audiox`'s
/// `Error::DemoModelMissing`).
pub const HOW_TO_PRODUCE: &str = "the audiox-demo crate was built without its assets: train the \
    demo model with audiox-train (docs/training.md), convert its exported checkpoint folder with \
    `cargo run --release -p audiox --example demo_assets -- <export> audiox-demo/assets` and \
    rebuild, or point the environment variable AUDIOX_DEMO_ASSETS at such a folder when \
    building (docs/weights.md, \"The embedded demo model\")";

/// Whether the demo model is embedded (the assets held a `config.json` at build time).
pub fn is_available() -> bool {
    file("config.json").is_some()
}

/// The bytes of the embedded file at `path` (relative, `/`-separated).
pub fn file(path: &str) -> Option<&'static [u8]> {
    FILES
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| FILES[i].1)
}

/// The size of all embedded files together, in bytes.
pub fn total_bytes() -> usize {
    FILES.iter().map(|(_, b)| b.len()).sum()
}

/// The folder the files were embedded from (empty when none were).
pub fn source_dir() -> &'static str {
    env!("AUDIOX_DEMO_SOURCE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_list_is_sorted_and_lookups_find_every_file() {
        assert!(FILES.windows(2).all(|w| w[0].0 < w[1].0));
        for (path, bytes) in FILES {
            assert!(
                !path.starts_with("pretrained_ckpt/"),
                "the teacher's crate holds {path}"
            );
            assert_eq!(file(path), Some(*bytes));
        }
        assert_eq!(file("no/such/file"), None);
        assert_eq!(is_available(), !FILES.is_empty());
        assert_eq!(is_available(), !source_dir().is_empty());
    }
}
