//! AudioX-Turbo in Rust: anything-to-audio generation (text, video, image and audio prompts
//! in; stereo audio out) on the burn framework, faithful to the official PyTorch
//! implementation and its trained weights.
//!
//! ```no_run
//! use audiox::{AudioX, Request};
//!
//! let model = AudioX::builder()
//!     .checkpoint_dir("checkpoints") // official layout, see docs/weights.md
//!     .build()?; // CPU by default; .device(..) for another backend
//!
//! let out = model.generate(
//!     Request::text("a wooden door creaks open, then slams shut").seed(7), // same seed => same audio
//! )?;
//! out.audio[0].write_wav("door.wav")?;
//! println!("seed {:?}, {}", out.seed, out.timings);
//! # Ok::<(), audiox::Error>(())
//! ```
//!
//! The crates behind it: `audiox-core` (config, errors, weights, audio, noise),
//! `audiox-vae`, `audiox-encoders`, `audiox-mmdit`, `audiox-sampler` (re-exported as
//! [`sampler`] for custom samplers). The user guide is `docs/guide.md`.
#![deny(missing_docs)]

mod checkpoint;
pub mod config;
pub mod convert;
pub mod demo;
mod device;
mod generate;
#[cfg(feature = "hub")]
pub mod hub;
mod limits;
pub mod long_form;
mod memory;
mod model;
#[cfg(feature = "parity")]
pub mod parity;
mod request;
mod text_cache;

// Game-engine features (issue 18): asynchronous jobs, sound-effect output options, spectrograms.
pub mod jobs;
pub mod postprocess;
pub mod spectrogram;

pub use audiox_core::error::DownloadFailure;
pub use checkpoint::CheckpointPaths;
pub use device::{Precision, device_names, select_device};
pub use generate::{Generation, Intermediates, StageTimings};
#[cfg(feature = "hub")]
pub use hub::{Hub, HubConfig, Pretrained};
pub use long_form::{LongFormOptions, LongFormProgress, LongFormStream, Span, WavStream};
pub use memory::MemoryCheckpoint;
pub use model::{AudioX, AudioXBuilder, DenoiserKind, LOW_MEMORY_DECODE_CHUNK};
pub use request::{AudioPrompt, AudioPromptMask, Request, SamplerChoice, VideoInput};
// Issue 18 re-exports.
pub use jobs::{Job, JobProgress, JobQueue, JobStage};
pub use postprocess::OutputOptions;

pub use audiox_core::audio::{Audio, WavFormat};
pub use audiox_core::limits::Limits;
pub use audiox_core::noise::{NoiseSource, ReplayNoise, SeededNoise};
pub use audiox_core::precision::{HeldBytes, WeightPrecision};
pub use audiox_core::weights::LoadReport;
pub use audiox_core::{Error, Result};
pub use audiox_encoders::frames::{FrameSampling, ImageScaling, StillImage, VideoFrames};
pub use audiox_vae::ChunkedDecode;
pub use burn::tensor::{Device, DeviceKind};
pub use config::ModelConfig;

/// The sampler crate: the `Sampler` and `Denoiser` traits, the built-in samplers, guidance,
/// progress and cancellation.
pub use audiox_sampler as sampler;
pub use audiox_sampler::{CancelToken, StepControl, StepInfo};

/// Compile-time check that the model can be shared between threads.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<AudioX>();
}
