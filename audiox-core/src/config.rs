//! Typed mirror of the official AudioX-Turbo model config JSON
//! (`configs/audiox_turbo_infer_4step.json` and the `config.json` of a checkpoint folder).
//!
//! Parsing is strict: an unknown key inside the model description, a value of the wrong type,
//! or a set of values that cannot describe a working model is an [`Error::Config`] that names
//! the offending field by its dotted path. The `training` section is kept as opaque JSON: it
//! only matters to the trainer and varies between the official configs.
//!
//! Some sizes are hard-coded inside the official constructors rather than read from the
//! config (the video conditioner's 128 output tokens, the temporal transformer's 16 heads, the
//! Synchformer geometry, ...). [`ArchSizes`] holds them, at their full-size values by default;
//! the small fixture models override them through the extra top-level key
//! `_tiny_hardcoded_sizes`, which the official code ignores.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `diffusion_cond` (inference config) or `diffusion_dmd` (distillation config); both
    /// build the same network.
    pub model_type: ModelType,
    /// Audio samples the model generates per request (before the latent-length floor).
    pub sample_size: usize,
    /// Output sample rate in Hz.
    pub sample_rate: u32,
    /// Seconds of conditioning (video and audio prompt length). Absent in the distillation
    /// config, where the official code uses 10.
    #[serde(default = "default_seconds")]
    pub conditioning_seconds: u32,
    /// Frame rate of the CLIP video stream.
    #[serde(default = "default_video_fps")]
    pub video_fps: u32,
    /// Output channels (2: stereo).
    pub audio_channels: usize,
    /// The network description.
    pub model: ModelSection,
    /// Training-only settings, kept as opaque JSON.
    #[serde(default)]
    pub training: Option<Value>,
    /// Sizes the official constructors hard-code: the full-size values, overridden by small
    /// test models through `_tiny_hardcoded_sizes` (see [`ModelConfig::arch_sizes`]).
    #[serde(
        rename = "_tiny_hardcoded_sizes",
        default,
        deserialize_with = "deserialize_arch_sizes"
    )]
    pub hardcoded_sizes: ArchSizes,
}

fn default_seconds() -> u32 {
    10
}
fn default_video_fps() -> u32 {
    5
}

/// `model_type` of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ModelType {
    /// Inference config.
    #[serde(rename = "diffusion_cond")]
    DiffusionCond,
    /// Distillation (DMD) training config; same network.
    #[serde(rename = "diffusion_dmd")]
    DiffusionDmd,
}

/// `model` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The VAE that decodes latents to audio.
    pub pretransform: PretransformConfig,
    /// The conditioners and the conditioning width.
    pub conditioning: ConditioningConfig,
    /// The diffusion network.
    pub diffusion: DiffusionConfig,
    /// Latent channels.
    pub io_channels: usize,
}

/// A pretransform (only `autoencoder` exists in this model family).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretransformConfig {
    /// Must be `autoencoder`.
    #[serde(rename = "type")]
    pub kind: PretransformKind,
    /// Whether the official code encodes/decodes batch items one at a time (numerically the
    /// same as batched).
    #[serde(default = "default_true")]
    pub iterate_batch: bool,
    /// The autoencoder.
    pub config: AutoencoderConfig,
}

fn default_true() -> bool {
    true
}

/// Pretransform kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PretransformKind {
    /// An autoencoder (Oobleck VAE).
    #[serde(rename = "autoencoder")]
    Autoencoder,
}

/// The Oobleck autoencoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Encoder half.
    pub encoder: OobleckEncoderSpec,
    /// Decoder half.
    pub decoder: OobleckDecoderSpec,
    /// Bottleneck (`vae`).
    pub bottleneck: BottleneckSpec,
    /// Latent channels after the bottleneck.
    pub latent_dim: usize,
    /// Product of the strides.
    pub downsampling_ratio: usize,
    /// Audio channels in and out.
    pub io_channels: usize,
}

/// `{ "type": "oobleck", "config": {...} }` for the encoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobleckEncoderSpec {
    /// Must be `oobleck`.
    #[serde(rename = "type")]
    pub kind: OobleckKind,
    /// Training flag, ignored at inference.
    #[serde(default)]
    pub requires_grad: Option<bool>,
    /// The encoder sizes.
    pub config: OobleckEncoderConfig,
}

/// `{ "type": "oobleck", "config": {...} }` for the decoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobleckDecoderSpec {
    /// Must be `oobleck`.
    #[serde(rename = "type")]
    pub kind: OobleckKind,
    /// Training flag, ignored at inference.
    #[serde(default)]
    pub requires_grad: Option<bool>,
    /// The decoder sizes.
    pub config: OobleckDecoderConfig,
}

/// Encoder/decoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OobleckKind {
    /// The Oobleck convolutional codec.
    #[serde(rename = "oobleck")]
    Oobleck,
}

/// Oobleck encoder sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobleckEncoderConfig {
    /// Audio channels in.
    pub in_channels: usize,
    /// Base width.
    pub channels: usize,
    /// Width multipliers per level.
    pub c_mults: Vec<usize>,
    /// Down-sampling stride per level.
    pub strides: Vec<usize>,
    /// Output channels (2x the VAE latent: mean and scale).
    pub latent_dim: usize,
    /// SnakeBeta activations (the only supported choice).
    #[serde(default = "default_true")]
    pub use_snake: bool,
}

/// Oobleck decoder sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobleckDecoderConfig {
    /// Audio channels out.
    pub out_channels: usize,
    /// Base width.
    pub channels: usize,
    /// Width multipliers per level.
    pub c_mults: Vec<usize>,
    /// Up-sampling stride per level (listed shallow to deep, like the encoder).
    pub strides: Vec<usize>,
    /// Latent channels in.
    pub latent_dim: usize,
    /// SnakeBeta activations (the only supported choice).
    #[serde(default = "default_true")]
    pub use_snake: bool,
    /// A final tanh (false in every AudioX-Turbo config).
    #[serde(default)]
    pub final_tanh: bool,
}

/// Bottleneck of the autoencoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleneckSpec {
    /// Must be `vae`.
    #[serde(rename = "type")]
    pub kind: BottleneckKind,
}

/// Bottleneck kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BottleneckKind {
    /// Gaussian VAE bottleneck: mean and softplus scale, sampled.
    #[serde(rename = "vae")]
    Vae,
}

/// `model.conditioning`.
#[derive(Debug, Clone)]
pub struct ConditioningConfig {
    /// The conditioners, in config order (this order fixes the reference's random-draw order).
    pub configs: Vec<ConditionerConfig>,
    /// Width of every condition stream.
    pub cond_dim: usize,
}

/// One conditioner: its id and its kind-specific settings.
#[derive(Debug, Clone)]
pub struct ConditionerConfig {
    /// The id the diffusion section refers to (`video_prompt`, `text_prompt`, `audio_prompt`).
    pub id: String,
    /// Kind and settings.
    pub kind: ConditionerKind,
}

/// The conditioner kinds AudioX-Turbo uses.
#[derive(Debug, Clone)]
pub enum ConditionerKind {
    /// `clip-with-sync-w-empty-feat`: CLIP frames + temporal transformer + Synchformer sync.
    Video(VideoConditionerConfig),
    /// `t5`: T5-base encoder.
    Text(TextConditionerConfig),
    /// `audio_autoencoder`: VAE-encoded audio prompt.
    Audio(AudioConditionerConfig),
}

/// Settings of the video conditioner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConditionerConfig {
    /// Folder name of the CLIP model (`clip-vit-base-patch32`).
    pub clip_model_name: String,
    /// Input masking ratio (only 0 is used at inference).
    #[serde(default)]
    pub mask_ratio: f64,
    /// Masking type (only `input` exists in the shipped configs).
    #[serde(default = "default_mask_type")]
    pub mask_type: String,
    /// How sync features join (only `add` is supported).
    #[serde(default = "default_sync_type")]
    pub sync_type: String,
    /// Frames per second of the CLIP stream; the official conditioner defaults to 5.
    #[serde(default)]
    pub video_fps: Option<u32>,
}

fn default_mask_type() -> String {
    "input".into()
}
fn default_sync_type() -> String {
    "add".into()
}

/// Settings of the text conditioner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConditionerConfig {
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
}

/// Settings of the audio-prompt conditioner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConditionerConfig {
    /// Sample rate of the prompt.
    pub sample_rate: u32,
    /// The conditioner's private VAE.
    pub pretransform_config: PretransformConfig,
    /// Where the official code loads that VAE from (relative to the working directory).
    #[serde(default)]
    pub pretransform_ckpt_path: Option<String>,
    /// Latent frames of a full-length prompt (input of `proj_features_128`).
    pub latent_seq_len: usize,
    /// Lower bound of the random masking ratio.
    pub mask_ratio_start: f64,
    /// Upper bound of the random masking ratio.
    pub mask_ratio_end: f64,
}

/// `model.diffusion`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    /// Conditioner ids whose tokens form the cross-attention context, in collection order.
    pub cross_attention_cond_ids: Vec<String>,
    /// Global conditioning ids (empty for AudioX-Turbo).
    #[serde(default)]
    pub global_cond_ids: Vec<String>,
    /// Must be `mmdit`.
    #[serde(rename = "type")]
    pub kind: DiffusionKind,
    /// Whether a gate (fusion block) is used.
    #[serde(default)]
    pub gate: bool,
    /// Must be `MAF`.
    pub gate_type: GateType,
    /// MAF sizes.
    pub gate_type_config: MafConfig,
    /// Must be `rectified_flow`.
    pub diffusion_objective: DiffusionObjective,
    /// The transformer.
    pub config: MmditConfig,
}

/// Diffusion network kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DiffusionKind {
    /// The MMDiT of AudioX.
    #[serde(rename = "mmdit")]
    Mmdit,
}

/// Fusion gate kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum GateType {
    /// Multimodal Adaptive Fusion.
    #[serde(rename = "MAF")]
    Maf,
}

/// Training objectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DiffusionObjective {
    /// Rectified flow: the network predicts the velocity `eps - x0`.
    #[serde(rename = "rectified_flow")]
    RectifiedFlow,
}

/// MAF sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MafConfig {
    /// Experts per modality (3 modalities).
    pub num_experts_per_modality: usize,
    /// Attention heads of the expert cross-attention and fusion layers.
    pub num_heads: usize,
    /// Fusion encoder layers.
    pub num_fusion_layers: usize,
}

/// MMDiT sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmditConfig {
    /// Latent channels.
    pub io_channels: usize,
    /// Transformer width.
    pub embed_dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Passed by the official code as the *head size* (see [`MmditConfig::attention_heads`]).
    pub num_heads: usize,
    /// Width of the condition tokens.
    pub cond_token_dim: usize,
    /// Width of the (unused) global condition.
    pub global_cond_dim: usize,
    /// Whether condition tokens are projected by `to_cond_embed` (false: it is dead weight).
    #[serde(default)]
    pub project_cond_tokens: bool,
    /// Must be `continuous_transformer`.
    pub transformer_type: String,
    /// Stored, unused.
    #[serde(default)]
    pub condition_mask_type: Option<String>,
    /// Popped by the official builder, unused by the network.
    #[serde(default)]
    pub video_fps: Option<u32>,
    /// Sequence length the network is built for (latent frames + 1 time token); the official
    /// constructor defaults it to 237.
    #[serde(rename = "_latent_seq_len", default)]
    pub latent_seq_len: Option<usize>,
}

impl MmditConfig {
    /// Attention heads per block. upstream: the official transformer passes `dim_heads`
    /// (`embed_dim / num_heads`) as the head count, so the blocks have `embed_dim / num_heads`
    /// heads of `num_heads` dims (64 heads of 24 at full size).
    pub fn attention_heads(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Size of one attention head (see [`MmditConfig::attention_heads`]).
    pub fn head_dim(&self) -> usize {
        self.num_heads
    }
}

/// Hidden width of the MMDiT's SwiGLU feed-forward: `256 * ceil(floor(2 * 4E / 3) / 256)`.
pub fn mmdit_ffn_hidden(embed_dim: usize) -> usize {
    let hidden = (2 * 4 * embed_dim) / 3;
    hidden.div_ceil(256) * 256
}

// ---------------------------------------------------------------------------------------------
// Hard-coded sizes
// ---------------------------------------------------------------------------------------------

/// Sizes the official constructors hard-code instead of reading from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchSizes {
    /// Output tokens of the video conditioner (`proj` / `proj_sync` output, 128).
    pub video_tokens: usize,
    /// Output tokens of the audio-prompt conditioner (`proj_features_128` output, 128).
    pub audio_tokens: usize,
    /// Rows of the Synchformer feature input of the video conditioner (240).
    pub sync_rows: usize,
    /// The video conditioner's temporal transformer.
    pub temporal: TemporalSizes,
    /// The Synchformer visual extractor.
    pub synchformer: SynchformerSizes,
}

/// Temporal transformer sizes of the video conditioner.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TemporalSizes {
    /// Layers (4).
    pub depth: usize,
    /// Heads (16).
    pub heads: usize,
    /// Head size (64).
    pub dim_head: usize,
    /// MLP hidden width (3072).
    pub mlp_dim: usize,
}

/// Synchformer (MotionFormer) sizes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SynchformerSizes {
    /// Square frame size (224).
    pub image_size: usize,
    /// Spatial patch size (16).
    pub patch_size: usize,
    /// Frames per tubelet token (2).
    pub tubelet: usize,
    /// Width (768).
    pub embed_dim: usize,
    /// Divided space-time blocks (12).
    pub depth: usize,
    /// Attention heads (12).
    pub heads: usize,
    /// MLP ratio (4).
    pub mlp_ratio: usize,
    /// Frames per segment (16).
    pub segment: usize,
    /// Frames between segment starts (8).
    pub stride: usize,
    /// Frame rate of the Synchformer stream (25).
    pub frame_rate: u32,
    /// LayerNorm epsilon (1e-6).
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
}

fn default_layer_norm_eps() -> f64 {
    1e-6
}

/// `_tiny_hardcoded_sizes`: each entry is `[this model's value, full-size value]`; entries this
/// crate does not use (and the second value of each pair) are ignored, as the official code
/// ignores the whole key.
#[derive(Deserialize)]
struct HardcodedSizes {
    /// `proj` weight shape `[T·Q, Nv]`.
    #[serde(rename = "video_prompt.proj")]
    video_proj: Option<Pair<[usize; 2]>>,
    /// `proj_sync` weight shape `[R, Nv]`.
    #[serde(rename = "video_prompt.proj_sync")]
    video_proj_sync: Option<Pair<[usize; 2]>>,
    /// `proj_features_128` weight shape `[La, Na]`.
    #[serde(rename = "audio_prompt.proj_features_128")]
    audio_proj: Option<Pair<[usize; 2]>>,
    #[serde(rename = "video_prompt.Temp_transformer")]
    temporal: Option<Pair<TemporalSizes>>,
    synchformer: Option<Pair<SynchformerSizes>>,
}

/// `[this model's value, full-size value]`.
type Pair<T> = (T, serde::de::IgnoredAny);

fn deserialize_arch_sizes<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> std::result::Result<ArchSizes, D::Error> {
    let given = HardcodedSizes::deserialize(de)?;
    let mut sizes = ArchSizes::default();
    if let Some(([_, tokens], _)) = given.video_proj {
        sizes.video_tokens = tokens;
    }
    if let Some(([rows, _], _)) = given.video_proj_sync {
        sizes.sync_rows = rows;
    }
    if let Some(([_, tokens], _)) = given.audio_proj {
        sizes.audio_tokens = tokens;
    }
    if let Some((temporal, _)) = given.temporal {
        sizes.temporal = temporal;
    }
    if let Some((synchformer, _)) = given.synchformer {
        sizes.synchformer = synchformer;
    }
    Ok(sizes)
}

impl Default for ArchSizes {
    fn default() -> Self {
        ArchSizes {
            video_tokens: 128,
            audio_tokens: 128,
            sync_rows: 240,
            temporal: TemporalSizes {
                depth: 4,
                heads: 16,
                dim_head: 64,
                mlp_dim: 3072,
            },
            synchformer: SynchformerSizes::default(),
        }
    }
}

impl Default for SynchformerSizes {
    fn default() -> Self {
        SynchformerSizes {
            image_size: 224,
            patch_size: 16,
            tubelet: 2,
            embed_dim: 768,
            depth: 12,
            heads: 12,
            mlp_ratio: 4,
            segment: 16,
            stride: 8,
            frame_rate: 25,
            layer_norm_eps: 1e-6,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------------------------

/// The official inference config, as shipped by the reference implementation.
pub const OFFICIAL_INFER_CONFIG: &str = include_str!("../assets/audiox_turbo_infer_4step.json");

impl ModelConfig {
    /// Reads and validates a config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| match e {
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

    /// The official full-size inference config (`configs/audiox_turbo_infer_4step.json` of the
    /// reference implementation), built in.
    pub fn official() -> Self {
        Self::from_json_str(OFFICIAL_INFER_CONFIG).expect("the built-in official config is valid")
    }

    /// Parses and validates a config from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: ModelConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            Error::config(field, e.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a config from an already parsed JSON value.
    pub fn from_json_value(value: &Value) -> Result<Self> {
        Self::from_json_str(&value.to_string())
    }

    /// Checks that the values describe a model this crate can build: every size positive, the
    /// sizes consistent across sections, and every size derived from them (products of
    /// strides, widths, sample counts) representable. A bad value is an [`Error::Config`]
    /// naming its field.
    pub fn validate(&self) -> Result<()> {
        positive("sample_size", self.sample_size)?;
        positive("sample_rate", self.sample_rate as usize)?;
        positive("conditioning_seconds", self.conditioning_seconds as usize)?;
        positive("video_fps", self.video_fps as usize)?;
        positive("audio_channels", self.audio_channels)?;
        positive("model.io_channels", self.model.io_channels)?;
        positive(
            "model.conditioning.cond_dim",
            self.model.conditioning.cond_dim,
        )?;
        mul(
            "conditioning_seconds",
            self.sample_rate as usize,
            self.conditioning_seconds as usize,
        )?;
        mul(
            "video_fps",
            self.video_fps as usize,
            self.conditioning_seconds as usize,
        )?;
        let pre = &self.model.pretransform.config;
        check_autoencoder("model.pretransform.config", pre)?;
        if pre.io_channels != self.audio_channels {
            return Err(Error::config(
                "model.pretransform.config.io_channels",
                format!(
                    "{} differs from audio_channels {}",
                    pre.io_channels, self.audio_channels
                ),
            ));
        }
        if self.model.io_channels != pre.latent_dim {
            return Err(Error::config(
                "model.io_channels",
                format!(
                    "{} differs from the VAE latent_dim {}",
                    self.model.io_channels, pre.latent_dim
                ),
            ));
        }
        let dit = &self.model.diffusion.config;
        let at = |k: &str| format!("model.diffusion.config.{k}");
        for (k, v) in [
            ("io_channels", dit.io_channels),
            ("embed_dim", dit.embed_dim),
            ("num_heads", dit.num_heads),
            ("cond_token_dim", dit.cond_token_dim),
            ("global_cond_dim", dit.global_cond_dim),
        ] {
            positive(at(k), v)?;
        }
        // The SwiGLU hidden width is computed from 8 x embed_dim.
        mul(at("embed_dim"), dit.embed_dim, 8)?;
        if dit.io_channels != pre.latent_dim {
            return Err(Error::config(
                "model.diffusion.config.io_channels",
                format!(
                    "{} differs from the VAE latent_dim {}",
                    dit.io_channels, pre.latent_dim
                ),
            ));
        }
        if dit.num_heads == 0 || !dit.embed_dim.is_multiple_of(dit.num_heads) {
            return Err(Error::config(
                "model.diffusion.config.num_heads",
                format!(
                    "{} does not divide embed_dim {}",
                    dit.num_heads, dit.embed_dim
                ),
            ));
        }
        if !dit.head_dim().is_multiple_of(2) {
            return Err(Error::config(
                "model.diffusion.config.num_heads",
                format!(
                    "head size {} must be even for the rotary embedding",
                    dit.head_dim()
                ),
            ));
        }
        if dit.depth == 0 {
            return Err(Error::config(
                "model.diffusion.config.depth",
                "must be at least 1",
            ));
        }
        if dit.transformer_type != "continuous_transformer" {
            return Err(Error::config(
                "model.diffusion.config.transformer_type",
                format!(
                    "`{}` is not supported (only `continuous_transformer`)",
                    dit.transformer_type
                ),
            ));
        }
        if dit.cond_token_dim != self.model.conditioning.cond_dim {
            return Err(Error::config(
                "model.diffusion.config.cond_token_dim",
                format!(
                    "{} differs from model.conditioning.cond_dim {}",
                    dit.cond_token_dim, self.model.conditioning.cond_dim
                ),
            ));
        }
        if dit.project_cond_tokens {
            return Err(Error::config(
                "model.diffusion.config.project_cond_tokens",
                "true is not supported (AudioX-Turbo feeds condition tokens unprojected)",
            ));
        }
        let latents = self.latent_length();
        if latents == 0 {
            return Err(Error::config(
                "sample_size",
                format!(
                    "{} is shorter than one latent frame ({} samples)",
                    self.sample_size, pre.downsampling_ratio
                ),
            ));
        }
        if let Some(seq) = dit.latent_seq_len
            && seq.checked_sub(1) != Some(latents)
        {
            return Err(Error::config(
                "model.diffusion.config._latent_seq_len",
                format!(
                    "{seq} but sample_size {} gives {latents} latent frames (+1 time token)",
                    self.sample_size
                ),
            ));
        }
        let diffusion = &self.model.diffusion;
        if !diffusion.global_cond_ids.is_empty() {
            return Err(Error::config(
                "model.diffusion.global_cond_ids",
                "global conditioning is not supported by AudioX-Turbo",
            ));
        }
        let maf = &diffusion.gate_type_config;
        let d = self.model.conditioning.cond_dim;
        positive(
            "model.diffusion.gate_type_config.num_fusion_layers",
            maf.num_fusion_layers,
        )?;
        // The gating network reads the three streams side by side.
        mul("model.conditioning.cond_dim", d, 3)?;
        if maf.num_heads == 0 || !d.is_multiple_of(maf.num_heads) {
            return Err(Error::config(
                "model.diffusion.gate_type_config.num_heads",
                format!("{} does not divide the fusion width {d}", maf.num_heads),
            ));
        }
        if maf.num_experts_per_modality == 0 {
            return Err(Error::config(
                "model.diffusion.gate_type_config.num_experts_per_modality",
                "must be at least 1",
            ));
        }
        // The three streams, by kind, in the context order the reference collects them.
        let ids = &diffusion.cross_attention_cond_ids;
        if ids.len() != 3 {
            return Err(Error::config(
                "model.diffusion.cross_attention_cond_ids",
                format!("expected the three ids video, text, audio; found {ids:?}"),
            ));
        }
        let expected = ["video", "text", "audio"];
        for (i, (id, want)) in ids.iter().zip(expected).enumerate() {
            let Some(cond) = self.model.conditioning.configs.iter().find(|c| &c.id == id) else {
                return Err(Error::config(
                    format!("model.diffusion.cross_attention_cond_ids[{i}]"),
                    format!("`{id}` is not a conditioner id"),
                ));
            };
            if cond.kind.name() != want {
                return Err(Error::config(
                    format!("model.diffusion.cross_attention_cond_ids[{i}]"),
                    format!(
                        "`{id}` is a {} conditioner; position {i} must be the {want} conditioner",
                        cond.kind.name()
                    ),
                ));
            }
        }
        for (i, c) in self.model.conditioning.configs.iter().enumerate() {
            let field = format!("model.conditioning.configs[{i}].config");
            match &c.kind {
                ConditionerKind::Video(v) => {
                    if v.mask_ratio != 0.0 {
                        return Err(Error::config(
                            format!("{field}.mask_ratio"),
                            "only 0 is supported",
                        ));
                    }
                    if v.sync_type != "add" {
                        return Err(Error::config(
                            format!("{field}.sync_type"),
                            "only `add` is supported",
                        ));
                    }
                }
                ConditionerKind::Text(t) => {
                    if t.max_length == 0 {
                        return Err(Error::config(
                            format!("{field}.max_length"),
                            "must be at least 1",
                        ));
                    }
                }
                ConditionerKind::Audio(a) => {
                    positive(format!("{field}.sample_rate"), a.sample_rate as usize)?;
                    positive(format!("{field}.latent_seq_len"), a.latent_seq_len)?;
                    check_autoencoder(
                        &format!("{field}.pretransform_config.config"),
                        &a.pretransform_config.config,
                    )?;
                    if !(0.0..=1.0).contains(&a.mask_ratio_start)
                        || !(0.0..=1.0).contains(&a.mask_ratio_end)
                        || a.mask_ratio_start > a.mask_ratio_end
                    {
                        return Err(Error::config(
                            format!("{field}.mask_ratio_start"),
                            format!(
                                "[{}, {}] is not a ratio range",
                                a.mask_ratio_start, a.mask_ratio_end
                            ),
                        ));
                    }
                }
            }
        }
        self.check_arch_sizes()
    }

    /// Checks the hard-coded sizes (`_tiny_hardcoded_sizes` of a small model).
    fn check_arch_sizes(&self) -> Result<()> {
        let sizes = &self.hardcoded_sizes;
        let at = |k: &str| format!("_tiny_hardcoded_sizes.{k}");
        positive(at("video_prompt.proj"), sizes.video_tokens)?;
        positive(at("video_prompt.proj_sync"), sizes.sync_rows)?;
        positive(at("audio_prompt.proj_features_128"), sizes.audio_tokens)?;
        let t = &sizes.temporal;
        for (k, v) in [
            ("depth", t.depth),
            ("heads", t.heads),
            ("dim_head", t.dim_head),
            ("mlp_dim", t.mlp_dim),
        ] {
            positive(at(&format!("video_prompt.Temp_transformer.{k}")), v)?;
        }
        mul(
            at("video_prompt.Temp_transformer.dim_head"),
            t.heads,
            t.dim_head,
        )?;
        let s = &sizes.synchformer;
        for (k, v) in [
            ("image_size", s.image_size),
            ("patch_size", s.patch_size),
            ("tubelet", s.tubelet),
            ("embed_dim", s.embed_dim),
            ("depth", s.depth),
            ("heads", s.heads),
            ("mlp_ratio", s.mlp_ratio),
            ("segment", s.segment),
            ("stride", s.stride),
            ("frame_rate", s.frame_rate as usize),
        ] {
            positive(at(&format!("synchformer.{k}")), v)?;
        }
        mul(at("synchformer.mlp_ratio"), s.mlp_ratio, s.embed_dim)?;
        mul(at("synchformer.image_size"), s.image_size, s.image_size)?;
        if !(s.layer_norm_eps.is_finite() && s.layer_norm_eps > 0.0) {
            return Err(Error::config(
                at("synchformer.layer_norm_eps"),
                format!("{} is not a positive number", s.layer_norm_eps),
            ));
        }
        // The DiT's context: the three streams' tokens side by side.
        let text_tokens = self.text_conditioner().map_or(0, |t| t.max_length);
        sizes
            .video_tokens
            .checked_add(text_tokens)
            .and_then(|n| n.checked_add(sizes.audio_tokens))
            .ok_or_else(|| {
                Error::config(at("video_prompt.proj"), "the context token count overflows")
            })?;
        Ok(())
    }

    /// Latent frames the DiT works on: `sample_size / downsampling_ratio` (floor).
    pub fn latent_length(&self) -> usize {
        self.sample_size / self.model.pretransform.config.downsampling_ratio
    }

    /// Samples of a full-length output (`sample_rate * conditioning_seconds`), the length the
    /// reference trims to.
    pub fn output_samples(&self) -> usize {
        self.sample_rate as usize * self.conditioning_seconds as usize
    }

    /// Samples of a full-length audio prompt (`sample_rate * conditioning_seconds`).
    pub fn prompt_samples(&self) -> usize {
        self.output_samples()
    }

    /// Number of CLIP frames a request carries (`conditioning_seconds * video_fps`).
    pub fn video_frames(&self) -> usize {
        self.conditioning_seconds as usize * self.video_fps as usize
    }

    /// The conditioner with the given kind name (`video`, `text`, `audio`).
    fn conditioner(&self, kind: &str) -> Option<&ConditionerConfig> {
        self.model
            .conditioning
            .configs
            .iter()
            .find(|c| c.kind.name() == kind)
    }

    /// The text conditioner's settings.
    pub fn text_conditioner(&self) -> Option<&TextConditionerConfig> {
        match &self.conditioner("text")?.kind {
            ConditionerKind::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The video conditioner's settings.
    pub fn video_conditioner(&self) -> Option<&VideoConditionerConfig> {
        match &self.conditioner("video")?.kind {
            ConditionerKind::Video(v) => Some(v),
            _ => None,
        }
    }

    /// The audio-prompt conditioner's settings.
    pub fn audio_conditioner(&self) -> Option<&AudioConditionerConfig> {
        match &self.conditioner("audio")?.kind {
            ConditionerKind::Audio(a) => Some(a),
            _ => None,
        }
    }

    /// The hard-coded sizes: full-size values, overridden by `_tiny_hardcoded_sizes` when the
    /// config has it (checked by [`ModelConfig::validate`]).
    pub fn arch_sizes(&self) -> Result<ArchSizes> {
        Ok(self.hardcoded_sizes.clone())
    }
}

impl ConditionerKind {
    /// `video`, `text` or `audio`.
    pub fn name(&self) -> &'static str {
        match self {
            ConditionerKind::Video(_) => "video",
            ConditionerKind::Text(_) => "text",
            ConditionerKind::Audio(_) => "audio",
        }
    }
}

fn check_autoencoder(prefix: &str, ae: &AutoencoderConfig) -> Result<()> {
    let enc = &ae.encoder.config;
    let dec = &ae.decoder.config;
    for (name, mults, strides, channels) in [
        ("encoder", &enc.c_mults, &enc.strides, enc.channels),
        ("decoder", &dec.c_mults, &dec.strides, dec.channels),
    ] {
        if strides.is_empty() || mults.len() != strides.len() {
            return Err(Error::config(
                format!("{prefix}.{name}.config.c_mults"),
                format!("{} multipliers for {} strides", mults.len(), strides.len()),
            ));
        }
        let at = |k: &str| format!("{prefix}.{name}.config.{k}");
        positive(at("channels"), channels)?;
        for (i, (&m, &s)) in mults.iter().zip(strides).enumerate() {
            positive(at(&format!("c_mults[{i}]")), m)?;
            positive(at(&format!("strides[{i}]")), s)?;
            // Level widths are `channels * c_mult`; kernels are `2 * stride` long.
            mul(at(&format!("c_mults[{i}]")), channels, m)?;
            mul(at(&format!("strides[{i}]")), s, 2)?;
        }
        let product = strides
            .iter()
            .try_fold(1usize, |p, &s| p.checked_mul(s))
            .ok_or_else(|| {
                Error::config(
                    at("strides"),
                    format!("the product of {strides:?} overflows"),
                )
            })?;
        if product != ae.downsampling_ratio {
            return Err(Error::config(
                format!("{prefix}.downsampling_ratio"),
                format!(
                    "{} but the {name} strides {strides:?} multiply to {product}",
                    ae.downsampling_ratio
                ),
            ));
        }
    }
    positive(format!("{prefix}.latent_dim"), ae.latent_dim)?;
    positive(format!("{prefix}.io_channels"), ae.io_channels)?;
    positive(
        format!("{prefix}.encoder.config.in_channels"),
        enc.in_channels,
    )?;
    positive(
        format!("{prefix}.decoder.config.out_channels"),
        dec.out_channels,
    )?;
    mul(format!("{prefix}.latent_dim"), ae.latent_dim, 2)?;
    if !enc.use_snake || !dec.use_snake {
        return Err(Error::config(
            format!("{prefix}.encoder.config.use_snake"),
            "only SnakeBeta activations are supported",
        ));
    }
    if enc.latent_dim != 2 * ae.latent_dim {
        return Err(Error::config(
            format!("{prefix}.encoder.config.latent_dim"),
            format!(
                "{} but the VAE bottleneck needs 2 x latent_dim = {}",
                enc.latent_dim,
                2 * ae.latent_dim
            ),
        ));
    }
    if dec.latent_dim != ae.latent_dim {
        return Err(Error::config(
            format!("{prefix}.decoder.config.latent_dim"),
            format!(
                "{} differs from latent_dim {}",
                dec.latent_dim, ae.latent_dim
            ),
        ));
    }
    if enc.in_channels != ae.io_channels || dec.out_channels != ae.io_channels {
        return Err(Error::config(
            format!("{prefix}.io_channels"),
            format!(
                "{} but the encoder takes {} and the decoder gives {} channels",
                ae.io_channels, enc.in_channels, dec.out_channels
            ),
        ));
    }
    Ok(())
}

/// `value` must be at least 1.
fn positive(field: impl Into<String>, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(field, "must be at least 1"));
    }
    Ok(())
}

/// `a * b`, or an error naming `field` when the product does not fit in `usize`.
fn mul(field: impl Into<String>, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::config(field, format!("{a} x {b} overflows")))
}

// Conditioners are `{id, type, config}` with the config's schema chosen by `type`; parsed by
// hand so that errors keep the full field path and unknown keys stay errors.
impl<'de> Deserialize<'de> for ConditioningConfig {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            configs: Vec<RawConditioner>,
            cond_dim: usize,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawConditioner {
            id: String,
            #[serde(rename = "type")]
            kind: String,
            config: Value,
        }
        use serde::de::Error as _;
        let raw = Raw::deserialize(de)?;
        let mut configs = Vec::with_capacity(raw.configs.len());
        for (i, c) in raw.configs.into_iter().enumerate() {
            let parse = |what: &str| -> String { format!("configs[{i}].config ({what}): ") };
            let kind = match c.kind.as_str() {
                "clip-with-sync-w-empty-feat" => ConditionerKind::Video(
                    serde_path_to_error::deserialize(&c.config).map_err(|e| {
                        D::Error::custom(format!("{}{} at {}", parse(&c.kind), e.inner(), e.path()))
                    })?,
                ),
                "t5" => ConditionerKind::Text(
                    serde_path_to_error::deserialize(&c.config).map_err(|e| {
                        D::Error::custom(format!("{}{} at {}", parse(&c.kind), e.inner(), e.path()))
                    })?,
                ),
                "audio_autoencoder" => ConditionerKind::Audio(
                    serde_path_to_error::deserialize(&c.config).map_err(|e| {
                        D::Error::custom(format!("{}{} at {}", parse(&c.kind), e.inner(), e.path()))
                    })?,
                ),
                other => {
                    return Err(D::Error::custom(format!(
                        "configs[{i}].type: unsupported conditioner type `{other}` \
                         (expected clip-with-sync-w-empty-feat, t5 or audio_autoencoder)"
                    )));
                }
            };
            configs.push(ConditionerConfig { id: c.id, kind });
        }
        Ok(ConditioningConfig {
            configs,
            cond_dim: raw.cond_dim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official inference config, as shipped (`configs/audiox_turbo_infer_4step.json`).
    pub(crate) const OFFICIAL: &str = OFFICIAL_INFER_CONFIG;

    #[test]
    fn official_config_parses_with_full_sizes() {
        let c = ModelConfig::from_json_str(OFFICIAL).unwrap();
        assert_eq!(c.latent_length(), 236);
        assert_eq!(c.output_samples(), 441_000);
        let dit = &c.model.diffusion.config;
        assert_eq!((dit.attention_heads(), dit.head_dim()), (64, 24));
        assert_eq!(mmdit_ffn_hidden(dit.embed_dim), 4096);
        assert_eq!(c.arch_sizes().unwrap(), ArchSizes::default());
        assert_eq!(c.text_conditioner().unwrap().max_length, 128);
        assert_eq!(c.audio_conditioner().unwrap().latent_seq_len, 215);
        assert_eq!(c.video_frames(), 50);
    }

    fn with(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "{from} not in config");
        text.replacen(from, to, 1)
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn unknown_key_names_its_path() {
        let bad = with(
            OFFICIAL,
            "\"embed_dim\": 1536,",
            "\"embed_dim\": 1536, \"embed_dims\": 3,",
        );
        let err = ModelConfig::from_json_str(&bad).unwrap_err();
        assert!(field_of(err).starts_with("model.diffusion.config"));
    }

    #[test]
    fn wrong_type_names_its_path() {
        let bad = with(OFFICIAL, "\"depth\": 24", "\"depth\": \"deep\"");
        let err = ModelConfig::from_json_str(&bad).unwrap_err();
        assert_eq!(field_of(err), "model.diffusion.config.depth");
    }

    #[test]
    fn inconsistent_strides_are_refused() {
        let bad = with(
            OFFICIAL,
            "\"downsampling_ratio\": 2048",
            "\"downsampling_ratio\": 1024",
        );
        let err = ModelConfig::from_json_str(&bad).unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.downsampling_ratio"
        );
    }

    #[test]
    fn inconsistent_heads_are_refused() {
        let bad = with(
            OFFICIAL,
            "\"num_heads\": 24,\n                \"cond_token_dim\"",
            "\"num_heads\": 25,\n                \"cond_token_dim\"",
        );
        let err = ModelConfig::from_json_str(&bad).unwrap_err();
        assert_eq!(field_of(err), "model.diffusion.config.num_heads");
    }

    #[test]
    fn unknown_conditioner_type_is_refused() {
        let bad = with(OFFICIAL, "\"type\": \"t5\"", "\"type\": \"clap\"");
        let err = ModelConfig::from_json_str(&bad).unwrap_err();
        assert!(field_of(err).starts_with("model.conditioning"));
    }

    /// The official config as JSON, changed by `edit`, parsed.
    fn edited(edit: impl FnOnce(&mut Value)) -> Result<ModelConfig> {
        let mut json: Value = serde_json::from_str(OFFICIAL).unwrap();
        edit(&mut json);
        ModelConfig::from_json_value(&json)
    }

    /// The main VAE's section of the official config as JSON.
    fn vae(json: &mut Value) -> &mut Value {
        &mut json["model"]["pretransform"]["config"]
    }

    #[test]
    fn zero_latent_dim_is_refused() {
        let err = edited(|j| {
            vae(j)["latent_dim"] = 0.into();
            vae(j)["encoder"]["config"]["latent_dim"] = 0.into();
            vae(j)["decoder"]["config"]["latent_dim"] = 0.into();
        })
        .unwrap_err();
        assert_eq!(field_of(err), "model.pretransform.config.latent_dim");
    }

    #[test]
    fn zero_channels_are_refused() {
        let err = edited(|j| vae(j)["decoder"]["config"]["channels"] = 0.into()).unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.decoder.config.channels"
        );
        let err = edited(|j| vae(j)["encoder"]["config"]["in_channels"] = 0.into()).unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.encoder.config.in_channels"
        );
        let err = edited(|j| j["audio_channels"] = 0.into()).unwrap_err();
        assert_eq!(field_of(err), "audio_channels");
        let err = edited(|j| j["model"]["conditioning"]["cond_dim"] = 0.into()).unwrap_err();
        assert_eq!(field_of(err), "model.conditioning.cond_dim");
    }

    #[test]
    fn zero_stride_or_multiplier_names_its_index() {
        let err = edited(|j| vae(j)["encoder"]["config"]["strides"][3] = 0.into()).unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.encoder.config.strides[3]"
        );
        let err = edited(|j| vae(j)["decoder"]["config"]["c_mults"][1] = 0.into()).unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.decoder.config.c_mults[1]"
        );
    }

    #[test]
    fn overflowing_sizes_are_refused() {
        // Strides whose product does not fit in usize.
        let huge = serde_json::json!([u32::MAX, u32::MAX, u32::MAX, 2, 2]);
        let err = edited(|j| vae(j)["encoder"]["config"]["strides"] = huge).unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.encoder.config.strides"
        );
        // A width multiplier whose level width overflows.
        let err =
            edited(|j| vae(j)["decoder"]["config"]["c_mults"][4] = usize::MAX.into()).unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.decoder.config.c_mults[4]"
        );
        let err = edited(|j| j["model"]["diffusion"]["config"]["embed_dim"] = usize::MAX.into())
            .unwrap_err();
        assert!(field_of(err).starts_with("model.diffusion.config"));
    }

    #[test]
    fn zero_top_level_sizes_are_refused() {
        for key in [
            "sample_size",
            "sample_rate",
            "conditioning_seconds",
            "video_fps",
        ] {
            let err = edited(|j| j[key] = 0.into()).unwrap_err();
            assert_eq!(field_of(err), key);
        }
        let err =
            edited(|j| j["model"]["diffusion"]["gate_type_config"]["num_fusion_layers"] = 0.into())
                .unwrap_err();
        assert_eq!(
            field_of(err),
            "model.diffusion.gate_type_config.num_fusion_layers"
        );
    }

    #[test]
    fn hardcoded_sizes_are_read_and_checked() {
        let tiny = serde_json::json!({
            "_note": "ignored",
            "video_prompt.proj": [[250, 8], [2500, 128]],
            "video_prompt.proj_sync": [[240, 8], [240, 128]],
            "audio_prompt.proj_features_128": [[25, 6], [215, 128]],
            "video_prompt.Temp_transformer": [
                {"width": 32, "depth": 2, "heads": 2, "dim_head": 8, "mlp_dim": 128}, {}
            ],
        });
        let c = edited(|j| j["_tiny_hardcoded_sizes"] = tiny.clone()).unwrap();
        let sizes = c.arch_sizes().unwrap();
        assert_eq!(
            (sizes.video_tokens, sizes.sync_rows, sizes.audio_tokens),
            (8, 240, 6)
        );
        assert_eq!((sizes.temporal.depth, sizes.temporal.mlp_dim), (2, 128));
        assert_eq!(sizes.synchformer, SynchformerSizes::default());

        let mut zero = tiny.clone();
        zero["video_prompt.Temp_transformer"][0]["heads"] = 0.into();
        let err = edited(|j| j["_tiny_hardcoded_sizes"] = zero).unwrap_err();
        assert_eq!(
            field_of(err),
            "_tiny_hardcoded_sizes.video_prompt.Temp_transformer.heads"
        );
        let mut wrong = tiny;
        wrong["video_prompt.proj"] = serde_json::json!("eight");
        let err = edited(|j| j["_tiny_hardcoded_sizes"] = wrong).unwrap_err();
        assert!(field_of(err).starts_with("_tiny_hardcoded_sizes"));
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(ModelConfig::from_json_str("{ nope").is_err());
        assert!(ModelConfig::from_json_str("").is_err());
    }
}
