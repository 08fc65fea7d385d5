//! The Oobleck VAE of AudioX-Turbo: SnakeBeta, weight-normalised convolutions, residual units,
//! the encoder and decoder, the VAE bottleneck and chunked decoding.
//!
//! Every size comes from the config (`OobleckEncoderConfig` / `OobleckDecoderConfig`, built
//! from the official JSON with `from_config`). Weights load through `audiox_core::weights`:
//! the checkpoint's `weight_g` / `weight_v` pairs are fused once at load.
#![deny(missing_docs)]

mod bottleneck;
mod chunked;
mod conv;
mod decoder;
mod encoder;
#[cfg(feature = "parity")]
pub mod parity;
mod residual;
mod snake;
mod vae;

pub use bottleneck::Posterior;
pub use chunked::ChunkedDecode;
pub use conv::{
    WeightNormConv1d, WeightNormConv1dConfig, WeightNormConvTranspose1d,
    WeightNormConvTranspose1dConfig,
};
pub use decoder::{DecoderBlock, OobleckDecoder, OobleckDecoderConfig};
pub use encoder::{EncoderBlock, OobleckEncoder, OobleckEncoderConfig};
pub use residual::ResidualUnit;
pub use snake::Snake;
pub use vae::{
    BottleneckConfig, BottleneckKind, OobleckKind, PretransformConfig, PretransformKind, Vae,
    VaeConfig,
};
