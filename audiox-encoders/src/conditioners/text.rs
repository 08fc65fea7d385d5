//! The text conditioner (`t5`, `T5Conditioner`): tokenizer, T5 encoder, and the padded
//! positions zeroed.
//!
//! `tokens = T5(ids, mask).last_hidden_state * mask` `[B, Nt, D]`; the mask `[B, Nt]` is the
//! tokenizer's attention mask. The reference's `proj_out` is the identity because the T5 width
//! equals the condition width (checked when the conditioner is built). The reference's T5 runs
//! in float16; this one runs float32 (see [`crate::t5`]).

use std::path::{Path, PathBuf};

use audiox_core::weights::{Component, LoadReport, WeightSource};
use audiox_core::{Error, Result};
use burn::tensor::{Device, Int, Tensor};

use super::Condition;
use crate::t5::{T5Config, T5Encoder};
use crate::tokenizer::{T5Tokenizer, Tokens};

/// Settings of a [`TextConditioner`] (the `t5` conditioner of the official config).
#[derive(Debug, Clone)]
pub struct T5ConditionerConfig {
    /// The T5 encoder's sizes (a Hugging Face `config.json`).
    pub t5: T5Config,
    /// The tokenizer file (`tokenizer.json`).
    pub tokenizer: PathBuf,
    /// Tokens per prompt (pad/truncate; the model config's `max_length`).
    pub max_length: usize,
    /// Condition width; must equal the T5 width.
    pub cond_dim: usize,
}

impl T5ConditionerConfig {
    /// The settings of a Hugging Face `t5-base` folder (`config.json`, `tokenizer.json`), with
    /// the model config's `max_length` and `cond_dim`. Its weight file is
    /// [`crate::hf_weights_file`]`(dir, "T5")`.
    pub fn from_hf_dir(dir: impl AsRef<Path>, max_length: usize, cond_dim: usize) -> Result<Self> {
        let dir = dir.as_ref();
        Ok(T5ConditionerConfig {
            t5: T5Config::from_hf_file(dir.join("config.json"))?,
            tokenizer: dir.join("tokenizer.json"),
            max_length,
            cond_dim,
        })
    }
}

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

impl Component for TextConditioner {
    type Config = T5ConditionerConfig;

    /// Reads the tokenizer and builds and loads the encoder from `sources` (Hugging Face
    /// names, see [`T5Encoder`]'s [`Component::load`]). Errors if the T5 width is not
    /// `cond_dim`.
    fn load(
        config: &T5ConditionerConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let tokenizer = T5Tokenizer::from_file(&config.tokenizer, config.max_length)?;
        let (encoder, report) = T5Encoder::load(&config.t5, sources, device)?;
        Ok((Self::new(tokenizer, encoder, config.cond_dim)?, report))
    }
}
