//! Samplers for rectified-flow models, independent of audio and of the network.
//!
//! A [`Denoiser`] predicts the velocity; a sampler turns noise into a clean latent by calling
//! it. See the crate README section in `docs/` for the built-in samplers and how to write one.

mod denoiser;

pub use denoiser::Denoiser;
