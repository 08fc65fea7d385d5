//! The rectified-flow teacher of [audiox](https://crates.io/crates/audiox)'s small demo model,
//! embedded in the binary.
//!
//! The demo model (crate `audiox-demo`) is a small AudioX trained on the project's procedural
//! sound-event corpus; its 4-step student was distilled from this teacher. The teacher ships so
//! that samplers can be compared on it (Euler with classifier-free guidance over any number of
//! steps). It lives in a crate of its own because the two denoisers with the VAE and T5 are over
//! crates.io's 10 MB crate limit. It holds one file: `pretrained_ckpt/pretrained_ckpt.safetensors`
//! (bf16), in the official checkpoint layout.
//!
//! This crate only holds the bytes; `audiox` (feature `demo`, on by default) loads them
//! (`audiox` depends on this crate, not the other way round, hence no doctest here):
//!
//! ```ignore
//! use audiox::{AudioX, DenoiserKind};
//! let teacher = AudioX::builder().demo().denoiser(DenoiserKind::Teacher).build()?;
//! # Ok::<(), audiox::Error>(())
//! ```
//!
//! The file comes from `assets/` (see `assets/README.md`), or from the `pretrained_ckpt/`
//! folder of the folder named by the environment variable `AUDIOX_DEMO_ASSETS` at build time. A
//! build without it has an empty [`FILES`] and [`is_available`] is false.
#![deny(missing_docs)]

/// Every embedded file: its path in the official checkpoint layout
/// (`pretrained_ckpt/pretrained_ckpt.safetensors`) and its bytes, sorted by path. Empty when
/// the crate was built without assets.
pub static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/files.rs"));

/// The most bytes the embedded files may take together: crates.io refuses crates over 10 MB
/// (compressed), and the rest of the crate and headroom take the other megabyte. Checked by the
/// crate's tests; CI checks the packaged `.crate` itself.
pub const SIZE_BUDGET: usize = 9_000_000;

/// The teacher's weight file, the one path this crate embeds when it has assets.
pub const TEACHER_FILE: &str = "pretrained_ckpt/pretrained_ckpt.safetensors";

/// Whether the teacher is embedded.
pub fn is_available() -> bool {
    file(TEACHER_FILE).is_some()
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
    env!("AUDIOX_DEMO_TEACHER_SOURCE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_list_is_sorted_holds_only_the_teacher_and_lookups_find_every_file() {
        assert!(FILES.windows(2).all(|w| w[0].0 < w[1].0));
        for (path, bytes) in FILES {
            assert!(path.starts_with("pretrained_ckpt/"), "{path}");
            assert_eq!(file(path), Some(*bytes));
        }
        assert_eq!(file("no/such/file"), None);
        assert_eq!(file("config.json"), None);
        assert_eq!(is_available(), !FILES.is_empty());
        assert_eq!(is_available(), !source_dir().is_empty());
    }
}
