//! The AudioX-Turbo diffusion transformer (the "MMDiT") and its multimodal fusion (MAF) block.
//!
//! * [`MafBlock`] fuses the three condition streams (text, video, audio prompt) into the one
//!   context the network attends to, once per request.
//! * [`Dit`] predicts the rectified-flow velocity `v = eps - x0` of a noisy latent. Everything
//!   that depends only on the context is computed once by [`Dit::prepare`] into a
//!   [`PreparedConditioning`] and reused by every [`Dit::forward`] of the request.
//! * [`MmditDenoiser`] is the sampler's view of both: a [`audiox_sampler::Denoiser`] holding
//!   the prepared conditional (and, for classifier-free guidance, unconditional) conditioning.
//!
//! Weights load from the official checkpoints through [`Dit::layout`] / [`MafBlock::layout`]
//! (DiT keys under `model.model.`, MAF keys under `maf_block.`); the `parity` module (feature
//! `parity`) compares both with the golden fixtures. The math is summarised in
//! `docs/architecture.md` ("The DiT forward pass", "The MAF block");
//! upstream quirks the weights depend on are marked `// upstream:` where they are reproduced.
#![deny(missing_docs)]

mod attention;
mod block;
mod denoiser;
mod dit;
mod ffn;
mod maf;
mod rope;
mod timestep;
mod token_conv;
pub mod trace;

#[cfg(feature = "parity")]
pub mod parity;

pub use attention::{AttentionConfig, SelfAttention, TimeCrossAttention};
pub use block::{BlockModulation, DitBlock, DitBlockConfig};
pub use denoiser::MmditDenoiser;
pub use dit::{Dit, DitConfig, PreparedConditioning, UnusedMlp};
pub use ffn::{ConvSwiGlu, ConvSwiGluConfig};
pub use maf::{FusionTransformer, GatingNetwork, MafBlock, MafBlockConfig, RefinedStreams};
pub use rope::RotaryTable;
pub use timestep::{FourierFeatures, TimestepEmbedding, TimestepEmbeddingConfig};
pub use token_conv::{TokenConv, TokenConvConfig, unfold_tokens};
pub use trace::{Trace, TraceEntry};
