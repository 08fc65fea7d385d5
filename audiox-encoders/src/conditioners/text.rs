//! The text conditioner (`t5`, `T5Conditioner`): tokenizer, T5 encoder, and the padded
//! positions zeroed.
//!
//! `tokens = T5(ids, mask).last_hidden_state * mask` `[B, Nt, D]`; the mask `[B, Nt]` is the
//! tokenizer's attention mask. The reference's `proj_out` is the identity because the T5 width
//! equals the condition width (checked when the conditioner is built). The reference's T5 runs
//! in float16; this one runs float32 (see [`crate::t5`]).

use std::path::Path;

use audiox_core::config::ModelConfig;
use audiox_core::weights::LoadReport;
use audiox_core::{Error, Result};
use burn::tensor::{Device, Int, Tensor};

use super::Condition;
use crate::t5::T5Encoder;
use crate::tokenizer::{T5Tokenizer, Tokens};

/// The text conditioner. See the docs at the top of `conditioners/text.rs`.
#[derive(Debug)]
pub struct TextConditioner {
    /// The tokenizer (pads/truncates to the config's `max_length`).
    pub tokenizer: T5Tokenizer,
    /// The encoder.
    pub encoder: T5Encoder,
}

impl TextConditioner {
    /// A conditioner from its parts. Errors if the encoder's width is not `cond_dim` (the
    /// official conditioner would then add a trained projection this port does not have).
    pub fn new(tokenizer: T5Tokenizer, encoder: T5Encoder, cond_dim: usize) -> Result<Self> {
        if encoder.d_model() != cond_dim {
            return Err(Error::config(
                "model.conditioning.cond_dim",
                format!(
                    "{cond_dim} differs from the T5 width {}; only equal widths are supported",
                    encoder.d_model()
                ),
            ));
        }
        Ok(TextConditioner { tokenizer, encoder })
    }

    /// Loads the tokenizer and the encoder from a Hugging Face `t5-base` folder
    /// (`tokenizer.json`, `config.json`, `model.safetensors` or `pytorch_model.bin`), with the
    /// model config's `max_length` and `cond_dim`.
    pub fn from_hf_dir(
        dir: impl AsRef<Path>,
        model: &ModelConfig,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        let text = model
            .text_conditioner()
            .ok_or_else(|| Error::config("model.conditioning.configs", "no text conditioner"))?;
        let tokenizer = T5Tokenizer::from_file(dir.join("tokenizer.json"), text.max_length)?;
        let (encoder, report) = T5Encoder::from_hf_dir(dir, device)?;
        Ok((
            Self::new(tokenizer, encoder, model.model.conditioning.cond_dim)?,
            report,
        ))
    }

    /// Tokenizes `prompts` and encodes them: the condition (tokens `[B, Nt, D]`, mask
    /// `[B, Nt]`) and the tokens (which say whether a prompt was truncated).
    pub fn forward(&self, prompts: &[&str], device: &Device) -> Result<(Condition, Tokens)> {
        if prompts.is_empty() {
            return Err(Error::InvalidRequest("no prompt to encode".into()));
        }
        let tokens = self.tokenizer.encode_batch(prompts)?;
        let condition =
            self.forward_tokens(tokens.ids_tensor(device), tokens.mask_tensor(device))?;
        Ok((condition, tokens))
    }

    /// Encodes token ids `[B, Nt]` with attention mask `[B, Nt]` (float 0/1).
    pub fn forward_tokens(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Result<Condition> {
        Ok(Condition {
            tokens: self.encoder.forward_masked(ids, mask.clone())?,
            mask,
        })
    }
}
