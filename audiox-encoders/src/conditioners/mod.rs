//! The three conditioners of AudioX-Turbo, each turning one modality into a stream of
//! condition tokens `[B, N, D]` for the MAF block:
//!
//! * [`VideoConditioner`] (`clip-with-sync-w-empty-feat`): CLIP per frame, a temporal
//!   transformer per token index, projections to `Nv` tokens, the Synchformer sync features
//!   added, and a learned feature for "no video";
//! * [`TextConditioner`] (`t5`): tokenizer, T5 encoder, padded positions zeroed;
//! * [`AudioPromptConditioner`] (`audio_autoencoder`): channel fix-up, span blanking, the
//!   conditioner's private VAE encoder and posterior sample, projections to `Na` tokens.
//!
//! The reference runs them in the config order video, text, audio, which fixes the order of
//! the random draws (only the audio conditioner draws: mask ratio, mask start, VAE noise).

mod audio;
mod temporal;
mod text;
mod video;

use burn::tensor::Tensor;

pub use audio::{
    AudioPromptConditioner, AudioPromptConfig, AudioPromptModel, AudioPromptTrace, PromptMask,
};
pub use temporal::{TemporalLayer, TemporalTransformer, TemporalTransformerConfig};
pub use text::{T5ConditionerConfig, TextConditioner};
pub use video::{VideoConditioner, VideoConditionerConfig, VideoTrace};

/// One condition stream as a conditioner returns it.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Condition tokens `[B, N, D]`.
    pub tokens: Tensor<3>,
    /// The conditioner's mask, as the reference returns it (float 0/1). Only the text mask
    /// `[B, Nt]` means anything; the video mask is ones `[B, 1]` and the audio mask ones
    /// `[B, D]`. The reference's MMDiT ignores all of them.
    pub mask: Tensor<2>,
}
