//! The CLIP ViT vision tower of the video conditioner (Hugging Face
//! `CLIPVisionModelWithProjection`, `openai/clip-vit-base-patch32` structure).
//!
//! Forward pass, for normalised pixels `[N, 3, H, W]` (see [`normalize_pixels`]):
//!
//! 1. patch embedding: a bias-free convolution with kernel = stride = patch size, computed as
//!    one matmul over the flattened patches -> `[N, P, D]` (patches in row-major `(h, w)` order);
//! 2. the class embedding in front, plus the position table -> `[N, 1 + P, D]`;
//! 3. `pre_layrnorm` (sic, the official name);
//! 4. pre-LN encoder layers: `x += out_proj(MHA(layer_norm1(x)))` (q scaled by `1/sqrt(d)`),
//!    `x += fc2(quick_gelu(fc1(layer_norm2(x))))` with `quick_gelu(x) = x * sigmoid(1.702 x)`.
//!
//! The video conditioner uses the last hidden state **before** `post_layernorm`
//! ([`ClipVision::forward`]). `image_embeds = visual_projection(post_layernorm(CLS))` is
//! available as [`ClipVision::image_embeds`] for completeness; AudioX-Turbo never uses it.

use std::path::Path;

use audiox_core::nn::{heads, merge_heads, quick_gelu, sdpa};
use audiox_core::precision::linear;
use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};
use audiox_core::{Error, Result};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

/// The CLIP pixel mean (RGB), applied after scaling to `[0, 1]`.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// The CLIP pixel standard deviation (RGB).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// CLIP pixel normalisation of frames holding pixel values 0..255 (as float) `[N, 3, H, W]`:
/// `(x / 255 - mean) / std` per channel, in float32 like the reference.
pub fn normalize_pixels(frames: Tensor<4>) -> Tensor<4> {
    let device = frames.device();
    let mean = Tensor::<1>::from_floats(CLIP_MEAN, &device).reshape([1, 3, 1, 1]);
    let std = Tensor::<1>::from_floats(CLIP_STD, &device).reshape([1, 3, 1, 1]);
    (frames.div_scalar(255.0) - mean) / std
}

/// Sizes of a CLIP vision tower.
#[derive(Config, Debug)]
pub struct ClipVisionConfig {
    /// Width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Output width of `visual_projection`.
    pub projection_dim: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Square input size in pixels.
    pub image_size: usize,
    /// Square patch size in pixels.
    pub patch_size: usize,
    /// Input channels.
    #[config(default = 3)]
    pub num_channels: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

/// The keys of a Hugging Face CLIP vision config this port reads (defaults as in
/// `transformers`' `CLIPVisionConfig`).
#[derive(Deserialize)]
struct HfClipVisionConfig {
    #[serde(default = "hf_default::hidden_size")]
    hidden_size: usize,
    #[serde(default = "hf_default::intermediate_size")]
    intermediate_size: usize,
    #[serde(default = "hf_default::projection_dim")]
    projection_dim: usize,
    #[serde(default = "hf_default::layers")]
    num_hidden_layers: usize,
    #[serde(default = "hf_default::heads")]
    num_attention_heads: usize,
    #[serde(default = "hf_default::num_channels")]
    num_channels: usize,
    #[serde(default = "hf_default::image_size")]
    image_size: usize,
    #[serde(default = "hf_default::patch_size")]
    patch_size: usize,
    #[serde(default = "hf_default::hidden_act")]
    hidden_act: String,
    #[serde(default = "hf_default::eps")]
    layer_norm_eps: f64,
}

mod hf_default {
    pub fn hidden_size() -> usize {
        768
    }
    pub fn intermediate_size() -> usize {
        3072
    }
    pub fn projection_dim() -> usize {
        512
    }
    pub fn layers() -> usize {
        12
    }
    pub fn heads() -> usize {
        12
    }
    pub fn num_channels() -> usize {
        3
    }
    pub fn image_size() -> usize {
        224
    }
    pub fn patch_size() -> usize {
        32
    }
    pub fn hidden_act() -> String {
        "quick_gelu".into()
    }
    pub fn eps() -> f64 {
        1e-5
    }
}

impl ClipVisionConfig {
    /// `openai/clip-vit-base-patch32`: width 768, 12 layers of 12 heads, MLP 3072, 224 px
    /// images in 32 px patches, projection 512.
    pub fn vit_b32() -> Self {
        ClipVisionConfig::new(768, 3072, 512, 12, 12, 224, 32)
    }

    /// Reads a Hugging Face `config.json`: a full CLIP config (its `vision_config` section is
    /// used) or a vision-only config.
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let with_path = |e: Error| match e {
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
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| with_path(Error::config("", format!("not JSON: {e}"))))?;
        Self::from_hf_json(&value).map_err(with_path)
    }

    /// Reads a CLIP config from parsed JSON (full config with `vision_config`, or vision only).
    pub fn from_hf_json(value: &Value) -> Result<Self> {
        let vision = value.get("vision_config").unwrap_or(value);
        let hf: HfClipVisionConfig = serde_json::from_value(vision.clone())
            .map_err(|e| Error::config("vision_config", e.to_string()))?;
        if hf.hidden_act != "quick_gelu" {
            return Err(Error::config(
                "vision_config.hidden_act",
                format!("`{}` is not supported (only `quick_gelu`)", hf.hidden_act),
            ));
        }
        let config = ClipVisionConfig {
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            projection_dim: hf.projection_dim,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            image_size: hf.image_size,
            patch_size: hf.patch_size,
            num_channels: hf.num_channels,
            layer_norm_eps: hf.layer_norm_eps,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::config(
                "vision_config.patch_size",
                format!(
                    "{} does not divide image_size {}",
                    self.patch_size, self.image_size
                ),
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::config(
                "vision_config.num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        Ok(())
    }

    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: class token + patches.
    pub fn tokens(&self) -> usize {
        1 + self.grid() * self.grid()
    }

    /// Builds the tower (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> ClipVision {
        let d = self.hidden_size;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: LinearConfig::new(d, d).init(device),
                    k_proj: LinearConfig::new(d, d).init(device),
                    v_proj: LinearConfig::new(d, d).init(device),
                    out_proj: LinearConfig::new(d, d).init(device),
                    num_heads: self.num_attention_heads,
                },
                layer_norm1: norm(),
                mlp: ClipMlp {
                    fc1: LinearConfig::new(d, self.intermediate_size).init(device),
                    fc2: LinearConfig::new(self.intermediate_size, d).init(device),
                },
                layer_norm2: norm(),
            })
            .collect();
        let p = self.patch_size;
        ClipVision {
            vision_model: ClipVisionTransformer {
                embeddings: ClipEmbeddings {
                    class_embedding: Initializer::Normal {
                        mean: 0.0,
                        std: 1.0,
                    }
                    .init([d], device),
                    patch_embedding: PatchEmbedding {
                        weight: Initializer::Normal {
                            mean: 0.0,
                            std: 1.0,
                        }
                        .init([d, self.num_channels, p, p], device),
                    },
                    position_embedding: EmbeddingConfig::new(self.tokens(), d).init(device),
                },
                pre_layrnorm: norm(),
                encoder: ClipEncoder { layers },
                post_layernorm: norm(),
            },
            visual_projection: LinearConfig::new(d, self.projection_dim)
                .with_bias(false)
                .init(device),
        }
    }
}

/// The patch convolution, held as the official `[D, C, p, p]` kernel.
#[derive(Module, Debug)]
pub struct PatchEmbedding {
    /// Kernel `[D, C, p, p]`.
    pub weight: Param<Tensor<4>>,
}

/// Class, patch and position embeddings.
#[derive(Module, Debug)]
pub struct ClipEmbeddings {
    /// The class token `[D]`.
    pub class_embedding: Param<Tensor<1>>,
    /// Patch convolution.
    pub patch_embedding: PatchEmbedding,
    /// Position table `[1 + P, D]`.
    pub position_embedding: Embedding,
}

/// Multi-head self-attention with separate q/k/v projections.
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Heads.
    pub num_heads: usize,
}

/// The quick-GELU MLP.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// `[D, F]`.
    pub fc1: Linear,
    /// `[F, D]`.
    pub fc2: Linear,
}

/// One pre-LN encoder layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// Self-attention.
    pub self_attn: ClipAttention,
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// MLP.
    pub mlp: ClipMlp,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
}

/// The encoder layers.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// Layers in order.
    pub layers: Vec<ClipEncoderLayer>,
}

/// The vision transformer (`vision_model.*`).
#[derive(Module, Debug)]
pub struct ClipVisionTransformer {
    /// Embeddings.
    pub embeddings: ClipEmbeddings,
    /// Norm before the encoder (official spelling).
    pub pre_layrnorm: LayerNorm,
    /// Encoder layers.
    pub encoder: ClipEncoder,
    /// Norm of the pooled class token (used by `image_embeds` only).
    pub post_layernorm: LayerNorm,
}

/// The CLIP vision tower with its projection. See the [module docs](self).
#[derive(Module, Debug)]
pub struct ClipVision {
    /// The transformer.
    pub vision_model: ClipVisionTransformer,
    /// Projection of the pooled class token `[D, projection_dim]` (unused by AudioX-Turbo).
    pub visual_projection: Linear,
}

impl ClipAttention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.num_heads;
        let q = heads(linear(&self.q_proj, x.clone()), h);
        let k = heads(linear(&self.k_proj, x.clone()), h);
        let v = heads(linear(&self.v_proj, x), h);
        linear(&self.out_proj, merge_heads(sdpa(q, k, v, None)))
    }
}

impl ClipEncoderLayer {
    /// `[N, Q, D]` -> `[N, Q, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let hidden = quick_gelu(linear(&self.mlp.fc1, self.layer_norm2.forward(x.clone())));
        x + linear(&self.mlp.fc2, hidden)
    }
}

impl ClipEmbeddings {
    /// Normalised pixels `[N, C, H, W]` -> embeddings `[N, 1 + P, D]`.
    fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let weight = self.patch_embedding.weight.val(); // [D, C, p, p]
        let [d, c, p, _] = weight.dims();
        let [n, _, height, width] = pixels.dims();
        let (gh, gw) = (height / p, width / p);
        // [N, C, gh, p, gw, p] -> [N, gh, gw, C, p, p]: one row per patch, in (h, w) order,
        // with the kernel's (c, i, j) order inside the row.
        let patches = pixels
            .reshape([n, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n * gh * gw, c * p * p]);
        let kernel = weight.reshape([d, c * p * p]).transpose(); // [C p p, D]
        let patch_tokens = patches.matmul(kernel).reshape([n, gh * gw, d]);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .expand([n, 1, d]);
        let tokens = Tensor::cat(vec![class, patch_tokens], 1);
        tokens + self.position_embedding.weight.val().unsqueeze::<3>()
    }
}

impl ClipVision {
    /// The official names are the Hugging Face ones; only burn's LayerNorm naming differs,
    /// which the loader maps by module type.
    pub fn layout() -> Layout {
        Layout::new()
    }

    /// Width.
    pub fn hidden_size(&self) -> usize {
        self.vision_model.pre_layrnorm.gamma.shape().dims::<1>()[0]
    }

    /// Square input size the position table was built for, in pixels.
    pub fn image_size(&self) -> usize {
        let emb = &self.vision_model.embeddings;
        let [positions, _] = emb.position_embedding.weight.shape().dims();
        let [_, _, p, _] = emb.patch_embedding.weight.shape().dims();
        let grid = ((positions - 1) as f64).sqrt().round() as usize;
        grid * p
    }

    /// Input channels.
    pub fn channels(&self) -> usize {
        self.vision_model
            .embeddings
            .patch_embedding
            .weight
            .shape()
            .dims::<4>()[1]
    }

    /// Tokens per image (class token + patches).
    pub fn tokens(&self) -> usize {
        self.vision_model
            .embeddings
            .position_embedding
            .weight
            .shape()
            .dims::<2>()[0]
    }

    /// Checks normalised pixels `[N, C, H, W]` against the tower's sizes.
    pub fn check_pixels(&self, dims: [usize; 4]) -> Result<()> {
        let c = self.channels();
        let s = self.image_size();
        let [n, ch, h, w] = dims;
        if n == 0 || ch != c || h != s || w != s {
            return Err(Error::input_shape(
                "CLIP frames",
                format!("[N >= 1, {c}, {s}, {s}]"),
                &dims,
            ));
        }
        Ok(())
    }

    /// Last hidden state `[N, 1 + P, D]` (before `post_layernorm`) of normalised pixels
    /// `[N, C, H, W]`.
    pub fn forward(&self, pixels: Tensor<4>) -> Result<Tensor<3>> {
        self.check_pixels(pixels.dims())?;
        let vm = &self.vision_model;
        let mut x = vm.pre_layrnorm.forward(vm.embeddings.forward(pixels));
        for layer in &vm.encoder.layers {
            x = layer.forward(x);
        }
        Ok(x)
    }

    /// The embeddings (before `pre_layrnorm`) followed by the hidden state after
    /// `pre_layrnorm` and after each encoder layer: `2 + layers` tensors `[N, 1 + P, D]`.
    pub fn hidden_states(&self, pixels: Tensor<4>) -> Result<Vec<Tensor<3>>> {
        self.check_pixels(pixels.dims())?;
        let vm = &self.vision_model;
        let embeddings = vm.embeddings.forward(pixels);
        let mut states = vec![embeddings.clone()];
        let mut x = vm.pre_layrnorm.forward(embeddings);
        states.push(x.clone());
        for layer in &vm.encoder.layers {
            x = layer.forward(x);
            states.push(x.clone());
        }
        Ok(states)
    }

    /// `visual_projection(post_layernorm(CLS))` `[N, projection_dim]` from a last hidden state
    /// `[N, 1 + P, D]`.
    pub fn image_embeds(&self, last_hidden_state: Tensor<3>) -> Tensor<2> {
        let [n, _, d] = last_hidden_state.dims();
        let cls = last_hidden_state.narrow(1, 0, 1).reshape([n, d]);
        linear(
            &self.visual_projection,
            self.vision_model.post_layernorm.forward(cls),
        )
    }
}

impl Component for ClipVision {
    type Config = ClipVisionConfig;

    /// Builds the tower and loads it from `sources` in the Hugging Face names (a Hugging Face
    /// folder's file, [`crate::hf_weights_file`], with no prefix). A full `CLIPModel` file holds
    /// the vision tower under the same `vision_model.*` / `visual_projection.*` names; its text
    /// tower is reported unused.
    fn load(
        config: &ClipVisionConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        load_module(config.init(device), &Self::layout(), sources)
    }
}
