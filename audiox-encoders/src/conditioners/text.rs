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
use serde::{Deserialize, Serialize};

use super::Condition;
use crate::t5::{T5Config, T5Encoder};
use crate::tokenizer::{T5Tokenizer, Tokens};

fn default_mask_type() -> String {
    "input".into()
}
fn official_cond_dim() -> usize {
    T5ConditionerConfig::OFFICIAL_COND_DIM
}

/// Settings of a [`TextConditioner`]: the `config` of the official config's `t5` conditioner,
/// deserialized under its official names, plus what the section does not hold -- the T5
/// encoder's sizes and the tokenizer file (from the Hugging Face folder, see
/// [`T5ConditionerConfig::with_hf_dir`]) and the condition width (`model.conditioning.cond_dim`,
/// set by the model config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct T5ConditionerConfig {
    /// Folder name of the T5 model (`t5-base`).
    pub t5_model_name: String,
    /// Tokens per prompt (pad/truncate).
    pub max_length: usize,
    /// Stored, unused by the official forward pass.
    #[serde(default)]
    pub mask_ratio: f64,
    /// Stored, unused by the official forward pass.
    #[serde(default = "default_mask_type")]
    pub mask_type: String,
    /// The T5 encoder's sizes (not in the section: a Hugging Face `config.json`; default
    /// [`T5Config::t5_base`]).
    #[serde(skip, default = "T5Config::t5_base")]
    pub t5: T5Config,
    /// The tokenizer file (not in the section: the folder's `tokenizer.json`; default
    /// `tokenizer.json`, relative to the working directory).
    #[serde(skip, default = "default_tokenizer")]
    pub tokenizer: PathBuf,
    /// Condition width; must equal the T5 width (not in the section; default
    /// [`T5ConditionerConfig::OFFICIAL_COND_DIM`]).
    #[serde(skip, default = "official_cond_dim")]
    pub cond_dim: usize,
}

fn default_tokenizer() -> PathBuf {
    PathBuf::from("tokenizer.json")
}

impl T5ConditionerConfig {
    /// The conditioner's `type` in the official config.
    pub const TYPE: &str = "t5";
    /// Condition width of the official model.
    pub const OFFICIAL_COND_DIM: usize = 768;

    /// The same with the T5 sizes and tokenizer of a Hugging Face `t5-base` folder
    /// (`config.json`, `tokenizer.json`). Its weight file is
    /// [`crate::hf_weights_file`]`(dir, "T5")`.
    pub fn with_hf_dir(mut self, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        self.t5 = T5Config::from_hf_file(dir.join("config.json"))?;
        self.tokenizer = dir.join("tokenizer.json");
        Ok(self)
    }

    /// Checks the section: at least one token per prompt. `at` is the section's dotted path in
    /// its file.
    pub fn validate(&self, at: &str) -> Result<()> {
        audiox_core::config::positive(format!("{at}.max_length"), self.max_length)
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
