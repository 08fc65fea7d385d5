//! AudioX-Turbo in Rust: anything-to-audio generation on burn.
#![warn(missing_docs)]

pub mod parity;

pub use audiox_core::audio::Audio;
pub use audiox_core::{Error, Result};
