//! The T5 encoder of the text conditioner (Hugging Face `T5EncoderModel`, `t5-base` structure).
//!
//! Forward pass, for token ids `[B, N]` and attention mask `[B, N]`:
//!
//! 1. token embedding `shared` -> `[B, N, D]`;
//! 2. a relative position bias `[H, N, N]` from the bucketed key-minus-query distance, looked up
//!    in block 0's table and reused by every block; padded keys get the most negative float
//!    added;
//! 3. per block: `x += o(attention(q, k, v of rms_norm(x)))` with **no** `1/sqrt(d)` logit
//!    scaling, then `x += wo(relu(wi(rms_norm(x))))`;
//! 4. a final RMS norm -> `last_hidden_state` `[B, N, D]`.
//!
//! The RMS norm ("T5LayerNorm") has a weight and no bias and does not subtract the mean. The
//! reference runs this model in float16 (the weights are cast and run under autocast); this port
//! runs float32, like the fixtures.
//!
//! Weights use the Hugging Face names (`fixtures/manifest/t5_base.json`). The token embedding is
//! stored twice in that format, as `shared.weight` and the tied `encoder.embed_tokens.weight`;
//! a file may hold only one of them. We hold one table, read from `shared.weight` or, failing
//! that, from `encoder.embed_tokens.weight` (see [`T5Encoder::load`]).

use std::path::Path;

use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};
use audiox_core::{Error, Result};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;
use serde_json::Value;

use audiox_core::half::clamp_f16;
use audiox_core::nn::{heads, merge_heads};
use audiox_core::precision::linear;

/// Official name of the token embedding.
pub const SHARED_EMBEDDING: &str = "shared.weight";
/// Official name of the tied copy of the token embedding.
pub const TIED_EMBEDDING: &str = "encoder.embed_tokens.weight";

/// Sizes of a T5 encoder.
#[derive(Config, Debug)]
pub struct T5Config {
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Size of one attention head.
    pub d_kv: usize,
    /// Feed-forward hidden width.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative position buckets (both directions together).
    #[config(default = 32)]
    pub relative_attention_num_buckets: usize,
    /// Distance from which every offset shares the last bucket.
    #[config(default = 128)]
    pub relative_attention_max_distance: usize,
    /// RMS norm epsilon.
    #[config(default = 1e-6)]
    pub layer_norm_epsilon: f64,
}

/// The keys of a Hugging Face T5 `config.json` this port reads (defaults as in `transformers`).
#[derive(Deserialize)]
struct HfT5Config {
    #[serde(default = "hf_default::vocab_size")]
    vocab_size: usize,
    #[serde(default = "hf_default::d_model")]
    d_model: usize,
    #[serde(default = "hf_default::d_kv")]
    d_kv: usize,
    #[serde(default = "hf_default::d_ff")]
    d_ff: usize,
    #[serde(default = "hf_default::num_layers")]
    num_layers: usize,
    #[serde(default = "hf_default::num_heads")]
    num_heads: usize,
    #[serde(default = "hf_default::buckets")]
    relative_attention_num_buckets: usize,
    #[serde(default = "hf_default::max_distance")]
    relative_attention_max_distance: usize,
    #[serde(default = "hf_default::eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "hf_default::feed_forward_proj")]
    feed_forward_proj: String,
}

mod hf_default {
    pub fn vocab_size() -> usize {
        32128
    }
    pub fn d_model() -> usize {
        512
    }
    pub fn d_kv() -> usize {
        64
    }
    pub fn d_ff() -> usize {
        2048
    }
    pub fn num_layers() -> usize {
        6
    }
    pub fn num_heads() -> usize {
        8
    }
    pub fn buckets() -> usize {
        32
    }
    pub fn max_distance() -> usize {
        128
    }
    pub fn eps() -> f64 {
        1e-6
    }
    pub fn feed_forward_proj() -> String {
        "relu".into()
    }
}

impl T5Config {
    /// The `t5-base` encoder: vocabulary 32128, width 768, 12 blocks of 12 heads x 64,
    /// feed-forward 3072.
    pub fn t5_base() -> Self {
        T5Config::new(32128, 768, 64, 3072, 12, 12)
    }

    /// Reads a Hugging Face `config.json` (missing keys take the `transformers` defaults).
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: Some(path.to_path_buf()),
            field: String::new(),
            message: format!("not JSON: {e}"),
        })?;
        Self::from_hf_json(&value).map_err(|e| match e {
            Error::Config {
                path: None,
                field,
                message,
            } => Error::Config {
                path: Some(path.to_path_buf()),
                field,
                message,
            },
            other => other,
        })
    }

    /// Reads the keys of a Hugging Face T5 config from parsed JSON.
    pub fn from_hf_json(value: &Value) -> Result<Self> {
        let hf: HfT5Config = serde_json::from_value(value.clone())
            .map_err(|e| Error::config("t5 config", e.to_string()))?;
        // Only the plain ReLU feed-forward of t5-base is implemented (not the gated variants).
        if hf.feed_forward_proj != "relu" {
            return Err(Error::config(
                "feed_forward_proj",
                format!("`{}` is not supported (only `relu`)", hf.feed_forward_proj),
            ));
        }
        let config = T5Config {
            vocab_size: hf.vocab_size,
            d_model: hf.d_model,
            d_kv: hf.d_kv,
            d_ff: hf.d_ff,
            num_layers: hf.num_layers,
            num_heads: hf.num_heads,
            relative_attention_num_buckets: hf.relative_attention_num_buckets,
            relative_attention_max_distance: hf.relative_attention_max_distance,
            layer_norm_epsilon: hf.layer_norm_epsilon,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if self.relative_attention_num_buckets < 4 {
            return Err(Error::config(
                "relative_attention_num_buckets",
                "must be at least 4",
            ));
        }
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 4 {
            return Err(Error::config(
                "relative_attention_max_distance",
                "must exceed a quarter of the bucket count",
            ));
        }
        Ok(())
    }

    /// Builds the encoder (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> T5Encoder {
        let inner = self.num_heads * self.d_kv;
        let norm = || {
            RmsNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let block = (0..self.num_layers)
            .map(|_| T5Block {
                attention_norm: norm(),
                attention: T5Attention {
                    q: linear(self.d_model, inner),
                    k: linear(self.d_model, inner),
                    v: linear(self.d_model, inner),
                    o: linear(inner, self.d_model),
                    num_heads: self.num_heads,
                },
                feed_forward_norm: norm(),
                feed_forward: T5FeedForward {
                    wi: linear(self.d_model, self.d_ff),
                    wo: linear(self.d_ff, self.d_model),
                },
            })
            .collect();
        T5Encoder {
            shared: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            encoder: T5Stack {
                relative_attention_bias: EmbeddingConfig::new(
                    self.relative_attention_num_buckets,
                    self.num_heads,
                )
                .init(device),
                block,
                final_layer_norm: norm(),
                num_buckets: self.relative_attention_num_buckets,
                max_distance: self.relative_attention_max_distance,
            },
        }
    }
}

/// Multi-head self-attention of a T5 block (bias-free projections, unscaled logits).
#[derive(Module, Debug)]
pub struct T5Attention {
    /// Query projection `[D, H*d]`.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection `[H*d, D]`.
    pub o: Linear,
    /// Heads.
    pub num_heads: usize,
}

/// The ReLU feed-forward of a T5 block (`DenseReluDense`).
#[derive(Module, Debug)]
pub struct T5FeedForward {
    /// `[D, F]`.
    pub wi: Linear,
    /// `[F, D]`.
    pub wo: Linear,
}

/// One encoder block: pre-norm attention and pre-norm feed-forward, each residual.
#[derive(Module, Debug)]
pub struct T5Block {
    /// Norm before attention (`layer.0.layer_norm`).
    pub attention_norm: RmsNorm,
    /// Self-attention (`layer.0.SelfAttention`).
    pub attention: T5Attention,
    /// Norm before the feed-forward (`layer.1.layer_norm`).
    pub feed_forward_norm: RmsNorm,
    /// Feed-forward (`layer.1.DenseReluDense`).
    pub feed_forward: T5FeedForward,
}

/// The encoder stack (`encoder.*`).
#[derive(Module, Debug)]
pub struct T5Stack {
    /// Bucket -> per-head bias table `[buckets, H]`, owned by block 0 and shared by all.
    pub relative_attention_bias: Embedding,
    /// The blocks.
    pub block: Vec<T5Block>,
    /// Final RMS norm.
    pub final_layer_norm: RmsNorm,
    /// Relative position buckets.
    pub num_buckets: usize,
    /// Largest distinguished distance.
    pub max_distance: usize,
}

/// The T5 encoder. See the [module docs](self).
#[derive(Module, Debug)]
pub struct T5Encoder {
    /// Token embedding `[vocab, D]` (`shared.weight`).
    pub shared: Embedding,
    /// Blocks and norms.
    pub encoder: T5Stack,
}

/// Intermediate values of one forward pass (for parity checks).
#[derive(Debug, Clone)]
pub struct T5Trace {
    /// Token embeddings `[B, N, D]`.
    pub embed: Tensor<3>,
    /// Block 0's relative position bias `[H, N, N]` (query, key), before the padding mask.
    pub rel_bias: Tensor<3>,
    /// Output of each block `[B, N, D]`.
    pub blocks: Vec<Tensor<3>>,
    /// After the final norm `[B, N, D]`.
    pub last_hidden_state: Tensor<3>,
}

/// The longest run of real tokens when every row of `mask` `[B, N]` is ones followed by zeros
/// (right padding), else `None`.
fn real_prefix_length(mask: &Tensor<2>) -> Option<usize> {
    let [_, n] = mask.dims();
    let values = mask.to_data().try_to_vec::<f32>().ok()?;
    let mut longest = 0;
    for row in values.chunks_exact(n.max(1)) {
        let real = row.iter().take_while(|&&v| v == 1.0).count();
        if row[real..].iter().any(|&v| v != 0.0) {
            return None;
        }
        longest = longest.max(real);
    }
    Some(longest)
}

/// `hidden [B, N, D] * mask [B, N]`: padded positions become exactly 0.
pub fn mask_padding(hidden: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
    hidden * mask.unsqueeze_dim::<3>(2)
}

/// Bucket of the relative offset `key - query` (bidirectional T5 rule): half of the buckets
/// for positive offsets; within a half, exact buckets for small distances and logarithmically
/// wider ones up to `max_distance`, beyond which all share the last bucket.
pub fn relative_position_bucket(offset: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let base = if offset > 0 { half } else { 0 };
    let distance = offset.abs();
    let max_exact = half / 2;
    if distance < max_exact {
        return (base + distance) as usize;
    }
    // upstream: the logarithmic bucket is computed in float32 and truncated, as in the
    // reference; at distances where the quotient is an integer (16, 32 and 64 for t5-base)
    // the float32 rounding decides the bucket.
    let log_ratio = (distance as f32 / max_exact as f32).ln();
    let log_range = (max_distance as f64 / max_exact as f64).ln() as f32;
    let scaled = log_ratio / log_range * (half - max_exact) as f32;
    let large = (max_exact + scaled as i64).min(half - 1);
    (base + large) as usize
}

impl T5Stack {
    /// Bucket ids `[N * N]` (query-major) for a sequence of `n` tokens.
    fn bucket_ids(&self, n: usize, device: &Device) -> Tensor<1, Int> {
        let mut ids = Vec::with_capacity(n * n);
        for query in 0..n as i64 {
            for key in 0..n as i64 {
                ids.push(
                    relative_position_bucket(key - query, self.num_buckets, self.max_distance)
                        as i64,
                );
            }
        }
        Tensor::from_data(TensorData::new(ids, [n * n]), device)
    }

    /// Block 0's relative position bias `[H, N, N]` for `n` tokens.
    pub fn position_bias(&self, n: usize, device: &Device) -> Tensor<3> {
        let table = self.relative_attention_bias.weight.val(); // [buckets, H]
        let [_, h] = table.dims();
        table
            .select(0, self.bucket_ids(n, device))
            .reshape([n, n, h])
            .permute([2, 0, 1])
    }
}

impl T5Attention {
    /// `x` `[B, N, D]`, `bias` `[B or 1, H, N, N]` added to the (unscaled) logits.
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let h = self.num_heads;
        let q = heads(linear(&self.q, x.clone()), h);
        let k = heads(linear(&self.k, x.clone()), h);
        let v = heads(linear(&self.v, x), h);
        let options = AttentionModuleOptions {
            // No 1/sqrt(d) scaling in T5 (folded into the trained weights).
            scale: Some(1.0),
            ..Default::default()
        };
        let out = attention(q, k, v, None, Some(bias), options);
        linear(&self.o, merge_heads(out))
    }
}

impl T5Block {
    /// The residual stream is clamped after each sub-layer when it is f16 (as the reference
    /// does in f16: trained T5 feed-forwards push it past the f16 range); f32 is untouched.
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let x = x.clone() + self.attention.forward(self.attention_norm.forward(x), bias);
        let x = clamp_f16(x);
        let ff = &self.feed_forward;
        let y = linear(
            &ff.wo,
            relu(linear(&ff.wi, self.feed_forward_norm.forward(x.clone()))),
        );
        clamp_f16(x + y)
    }
}

impl T5Encoder {
    /// How our parameter paths map to the Hugging Face names.
    pub fn layout() -> Layout {
        Layout::new()
            // Block 0 owns the bias table in the official module tree.
            .rename(
                r"^encoder\.relative_attention_bias\.",
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.",
            )
            .rename(
                r"^(encoder\.block\.\d+)\.attention\.",
                "${1}.layer.0.SelfAttention.",
            )
            .rename(
                r"^(encoder\.block\.\d+)\.attention_norm\.gamma$",
                "${1}.layer.0.layer_norm.weight",
            )
            .rename(
                r"^(encoder\.block\.\d+)\.feed_forward\.",
                "${1}.layer.1.DenseReluDense.",
            )
            .rename(
                r"^(encoder\.block\.\d+)\.feed_forward_norm\.gamma$",
                "${1}.layer.1.layer_norm.weight",
            )
            .rename(
                r"^encoder\.final_layer_norm\.gamma$",
                "encoder.final_layer_norm.weight",
            )
            // The tied copy of `shared.weight`; we hold one table.
            .ignore(r"^encoder\.embed_tokens\.weight$")
    }

    /// Model width.
    pub fn d_model(&self) -> usize {
        self.shared.weight.shape().dims::<2>()[1]
    }

    /// Checks ids `[B, N]` and mask `[B, N]` against each other and the vocabulary.
    fn check_inputs(&self, ids: &Tensor<2, Int>, mask: &Tensor<2>) -> Result<()> {
        let [b, n] = ids.dims();
        if b == 0 || n == 0 {
            return Err(Error::input_shape(
                "T5 token ids",
                "[B >= 1, N >= 1]",
                &[b, n],
            ));
        }
        if mask.dims() != [b, n] {
            return Err(Error::input_shape(
                "T5 attention mask",
                format!("[{b}, {n}] (as the token ids)"),
                &mask.dims(),
            ));
        }
        let vocab = self.shared.weight.shape().dims::<2>()[0] as i64;
        let max: i64 = ids.clone().max().into_scalar();
        let min: i64 = ids.clone().min().into_scalar();
        if min < 0 || max >= vocab {
            return Err(Error::InvalidRequest(format!(
                "T5 token ids must lie in [0, {vocab}); found [{min}, {max}]"
            )));
        }
        Ok(())
    }

    /// `last_hidden_state` `[B, N, D]` of ids `[B, N]` with attention mask `[B, N]` (1 = real
    /// token, 0 = padding; float).
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Result<Tensor<3>> {
        Ok(self.forward_trace(ids, mask)?.last_hidden_state)
    }

    /// What the text conditioner emits: `last_hidden_state * mask` `[B, N, D]`, padded
    /// positions exactly 0.
    ///
    /// When every row of `mask` is real tokens followed by padding (what the tokenizer
    /// produces), only the first `L` positions are encoded (`L` = the longest row) and the rest
    /// is zeros: padded keys get a weight of exactly 0 in every softmax, so the real positions'
    /// outputs do not depend on the padding, and the padded outputs are zeroed anyway. A
    /// 40-token prompt padded to 128 costs a third of the reference's encoder.
    pub fn forward_masked(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Result<Tensor<3>> {
        self.check_inputs(&ids, &mask)?;
        let [b, n] = ids.dims();
        if let Some(len) = real_prefix_length(&mask)
            && len < n
        {
            let len = len.max(1);
            let mask_real = mask.narrow(1, 0, len);
            let hidden = self.forward(ids.narrow(1, 0, len), mask_real.clone())?;
            let hidden = mask_padding(hidden, mask_real);
            let [_, _, d] = hidden.dims();
            let padding = Tensor::zeros([b, n - len, d], &hidden.device());
            return Ok(Tensor::cat(vec![hidden, padding], 1));
        }
        let hidden = self.forward(ids, mask.clone())?;
        Ok(mask_padding(hidden, mask))
    }

    /// [`T5Encoder::forward`] keeping the intermediates.
    pub fn forward_trace(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Result<T5Trace> {
        self.check_inputs(&ids, &mask)?;
        let [b, n] = ids.dims();
        let device = ids.device();
        let embed = self.shared.forward(ids); // [B, N, D]
        let rel_bias = self.encoder.position_bias(n, &device); // [H, N, N]
        // Padded keys: add the most negative finite value of the compute type (as the
        // reference), not -inf, so a row without any real key stays finite (and a real key's
        // `0 * min` stays 0: `f32::MIN` would be -inf in f16).
        let min = audiox_core::half::mask_min(mask.dtype());
        let key_bias = (mask.neg() + 1.0).mul_scalar(min).reshape([b, 1, 1, n]);
        let bias = rel_bias.clone().unsqueeze::<4>() + key_bias; // [B, H, N, N]

        let mut x = embed.clone();
        let mut blocks = Vec::with_capacity(self.encoder.block.len());
        for block in &self.encoder.block {
            x = block.forward(x, bias.clone());
            blocks.push(x.clone());
        }
        let last_hidden_state = self.encoder.final_layer_norm.forward(x);
        Ok(T5Trace {
            embed,
            rel_bias,
            blocks,
            last_hidden_state,
        })
    }
}

impl Component for T5Encoder {
    type Config = T5Config;

    /// Builds the encoder and loads it from `sources` in the Hugging Face names (`""` prefix
    /// for a Hugging Face folder's file, see [`crate::hf_weights_file`]). The token table comes
    /// from `shared.weight`, or from `encoder.embed_tokens.weight` when a source only holds
    /// the tied copy.
    fn load(
        config: &T5Config,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let aliased: Vec<_> = sources
            .iter()
            .map(|s| {
                let shared = format!("{}{SHARED_EMBEDDING}", s.prefix);
                let tied = format!("{}{TIED_EMBEDDING}", s.prefix);
                (s.dict.get(&shared).is_none() && s.dict.get(&tied).is_some()).then(|| {
                    s.dict.rename(|k, _| {
                        Some(if k == tied {
                            shared.clone()
                        } else {
                            k.to_string()
                        })
                    })
                })
            })
            .collect();
        let sources: Vec<WeightSource<'_>> = sources
            .iter()
            .zip(&aliased)
            .map(|(s, a)| match a {
                Some(dict) => WeightSource::with_prefix(dict, s.prefix),
                None => *s,
            })
            .collect();
        load_module(config.init(device), &Self::layout(), &sources)
    }
}
