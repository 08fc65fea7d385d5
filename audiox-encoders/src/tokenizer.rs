//! The T5 tokenizer of the text conditioner, read from a Hugging Face `tokenizer.json`.
//!
//! The reference calls the fast `t5-base` tokenizer with `truncation=True,
//! max_length=max_length, padding="max_length"`. [`T5Tokenizer`] does the same through the
//! `tokenizers` crate: the file's normalizer, pre-tokenizer and SentencePiece model produce the
//! pieces, its post-processor appends `</s>`, truncation keeps room for that `</s>` (the first
//! `max_length - 1` pieces survive), and `<pad>` fills the rest. The attention mask is 1 for the
//! pieces and the `</s>`, 0 for padding.
//!
//! Behaviour on unusual prompts:
//!
//! * The empty prompt gives `[</s>, <pad>, ...]` with mask `[1, 0, ...]` (as the reference).
//! * A prompt made only of whitespace is tokenized as the empty prompt. Both known `t5-base`
//!   tokenizer files already behave this way (their normalizer strips trailing spaces, or their
//!   pre-tokenizer splits on whitespace); the rule makes it hold for any file.
//! * A prompt longer than `max_length - 1` pieces is truncated; [`Tokens::dropped`] says how
//!   many pieces each prompt lost, so a caller can warn its user.

use std::path::{Path, PathBuf};

use audiox_core::{Error, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// The padding token of T5 tokenizers.
pub const PAD_TOKEN: &str = "<pad>";
/// The end-of-sequence token T5 tokenizers append.
pub const EOS_TOKEN: &str = "</s>";

/// Token ids and attention mask of a batch of prompts, each padded or truncated to
/// `max_length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids `[batch, max_length]`, row-major.
    pub ids: Vec<i64>,
    /// Attention mask `[batch, max_length]`, row-major: `true` for real tokens and `</s>`.
    pub mask: Vec<bool>,
    /// Number of prompts.
    pub batch: usize,
    /// Tokens per prompt.
    pub max_length: usize,
    /// Pieces each prompt lost to truncation (0 when it fit).
    pub dropped: Vec<usize>,
}

impl Tokens {
    /// Whether any prompt was truncated.
    pub fn truncated(&self) -> bool {
        self.dropped.iter().any(|&d| d > 0)
    }

    /// The ids of prompt `i` (`max_length` values).
    pub fn ids_of(&self, i: usize) -> &[i64] {
        &self.ids[i * self.max_length..(i + 1) * self.max_length]
    }

    /// The mask of prompt `i` (`max_length` values).
    pub fn mask_of(&self, i: usize) -> &[bool] {
        &self.mask[i * self.max_length..(i + 1) * self.max_length]
    }

    /// The ids as an integer tensor `[batch, max_length]`.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(
            TensorData::new(self.ids.clone(), [self.batch, self.max_length]),
            device,
        )
    }

    /// The mask as a float tensor of 0/1 `[batch, max_length]`.
    pub fn mask_tensor(&self, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = self
            .mask
            .iter()
            .map(|&m| if m { 1.0 } else { 0.0 })
            .collect();
        Tensor::from_data(
            TensorData::new(values, [self.batch, self.max_length]),
            device,
        )
    }
}

/// The T5 tokenizer with the reference's pad/truncate rule. See the [module docs](self).
#[derive(Clone)]
pub struct T5Tokenizer {
    /// The file's pipeline without truncation or padding (gives the untruncated pieces).
    plain: Tokenizer,
    /// The same pipeline with the reference's truncation and padding.
    fixed: Tokenizer,
    max_length: usize,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for T5Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Tokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("vocab_size", &self.plain.get_vocab_size(true))
            .finish()
    }
}

impl T5Tokenizer {
    /// Reads a `tokenizer.json` and pads/truncates every prompt to `max_length` tokens.
    ///
    /// Errors ([`Error::Tokenizer`]) when the file is missing, is not a tokenizer file, lacks
    /// the `<pad>` or `</s>` token, or when `max_length` leaves no room for the `</s>`.
    pub fn from_file(path: impl AsRef<Path>, max_length: usize) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Tokenizer {
            path: Some(path.to_path_buf()),
            message: format!("cannot read the tokenizer file: {e}"),
        })?;
        Self::build(&bytes, max_length, Some(path.to_path_buf()))
    }

    /// Like [`T5Tokenizer::from_file`], from the file's contents.
    pub fn from_bytes(bytes: &[u8], max_length: usize) -> Result<Self> {
        Self::build(bytes, max_length, None)
    }

    fn build(bytes: &[u8], max_length: usize, path: Option<PathBuf>) -> Result<Self> {
        let err = |message: String| Error::Tokenizer {
            path: path.clone(),
            message,
        };
        let mut plain = Tokenizer::from_bytes(bytes)
            .map_err(|e| err(format!("not a valid tokenizer.json: {e}")))?;
        plain
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        plain.with_padding(None);
        let pad_id = plain
            .token_to_id(PAD_TOKEN)
            .ok_or_else(|| err(format!("the vocabulary has no `{PAD_TOKEN}` token")))?;
        if plain.token_to_id(EOS_TOKEN).is_none() {
            return Err(err(format!("the vocabulary has no `{EOS_TOKEN}` token")));
        }
        let added = plain
            .get_post_processor()
            .map(|p| tokenizers::PostProcessor::added_tokens(p, false))
            .unwrap_or(0);
        if max_length <= added {
            return Err(err(format!(
                "max_length {max_length} leaves no room for a prompt ({added} special token(s) are appended)"
            )));
        }
        let mut fixed = plain.clone();
        fixed
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| err(e.to_string()))?;
        fixed.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: PAD_TOKEN.to_string(),
        }));
        Ok(T5Tokenizer {
            plain,
            fixed,
            max_length,
            path,
        })
    }

    /// Tokens per prompt.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Size of the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.plain.get_vocab_size(true)
    }

    /// Tokenizes one prompt.
    pub fn encode(&self, prompt: &str) -> Result<Tokens> {
        self.encode_batch(&[prompt])
    }

    /// Tokenizes a batch of prompts (see the [module docs](self) for the rules).
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<Tokens> {
        let n = self.max_length;
        let mut tokens = Tokens {
            ids: Vec::with_capacity(prompts.len() * n),
            mask: Vec::with_capacity(prompts.len() * n),
            batch: prompts.len(),
            max_length: n,
            dropped: Vec::with_capacity(prompts.len()),
        };
        let added = self
            .plain
            .get_post_processor()
            .map(|p| tokenizers::PostProcessor::added_tokens(p, false))
            .unwrap_or(0);
        for &prompt in prompts {
            // Documented rule: whitespace-only prompts are the empty prompt.
            let prompt = if prompt.trim().is_empty() { "" } else { prompt };
            let err = |e: tokenizers::Error| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot tokenize {prompt:?}: {e}"),
            };
            // The pieces before truncation, then the library's own truncate / append / pad.
            let pieces = self.plain.encode(prompt, false).map_err(err)?;
            tokens.dropped.push(pieces.len().saturating_sub(n - added));
            let encoding = self.fixed.post_process(pieces, None, true).map_err(err)?;
            if encoding.get_ids().len() != n {
                return Err(Error::Tokenizer {
                    path: self.path.clone(),
                    message: format!(
                        "{prompt:?} gave {} tokens instead of {n}",
                        encoding.get_ids().len()
                    ),
                });
            }
            tokens
                .ids
                .extend(encoding.get_ids().iter().map(|&id| id as i64));
            tokens
                .mask
                .extend(encoding.get_attention_mask().iter().map(|&m| m != 0));
        }
        Ok(tokens)
    }
}
