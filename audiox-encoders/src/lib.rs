//! Encoders and conditioners of AudioX-Turbo: T5, CLIP vision, Synchformer, and the video,
//! text and audio-prompt conditioners.
#![deny(missing_docs)]

pub mod clip;
pub mod conditioners;
pub mod frames;
#[cfg(feature = "parity")]
pub mod parity;
pub mod synchformer;
pub mod t5;
pub mod tokenizer;
#[cfg(feature = "video")]
pub mod video_file;
