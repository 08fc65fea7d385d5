//! The model config: the whole official AudioX-Turbo config file
//! (`configs/audiox_turbo_infer_4step.json`, the `config.json` of a checkpoint folder),
//! composed of the components' own config types.
//!
//! Each component owns the type of its section, next to its model, and deserializes it under
//! the official names: [`VaeConfig`] (`model.pretransform.config`), [`DitConfig`]
//! (`model.diffusion.config`), [`MafBlockConfig`] (`model.diffusion.gate_type_config`), and
//! the conditioners' [`VideoConditionerConfig`], [`T5ConditionerConfig`] and
//! [`AudioPromptConfig`] (`model.conditioning.configs[i].config`). The sizes the official
//! constructors hard-code are documented defaults of those types. This module holds what spans
//! sections: the file's top level, the choice of conditioner by `type`, the sizes one section
//! takes from another (the condition width, the DiT's context and sequence lengths, the prompt
//! length), and the checks that relate sections.
//!
//! Parsing is strict: an unknown key inside the model description, a value of the wrong type,
//! or a set of values that cannot describe a working model is an [`Error::Config`] that names
//! the offending field by its dotted path. The `training` section is kept as opaque JSON: it
//! only matters to the trainer and varies between the official configs.
//!
//! The small fixture models change some of the hard-coded sizes through the extra top-level
//! key `_tiny_hardcoded_sizes` ([`HardcodedSizes`]), which the official code ignores.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use audiox_core::config::{checked_mul as mul, positive};
use audiox_core::{Error, Result};
use audiox_encoders::conditioners::{
    AudioPromptConfig, T5ConditionerConfig, VideoConditionerConfig,
};
use audiox_encoders::synchformer::SynchformerConfig;
use audiox_mmdit::{DitConfig, MafBlockConfig};
use audiox_vae::{PretransformConfig, VaeConfig};

pub use audiox_core::config::OFFICIAL_INFER_CONFIG;

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
    /// `_tiny_hardcoded_sizes` as the file gives it (empty for a real config). Already applied
    /// to the components' configs.
    #[serde(rename = "_tiny_hardcoded_sizes", default)]
    pub hardcoded_sizes: HardcodedSizes,
    /// The Synchformer, which has no section (its official constructor hard-codes every size):
    /// the released model's sizes, or `_tiny_hardcoded_sizes.synchformer`.
    #[serde(skip)]
    pub synchformer: SynchformerConfig,
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

/// The conditioner kinds AudioX-Turbo uses, each with its component's config.
#[derive(Debug, Clone)]
pub enum ConditionerKind {
    /// `clip-with-sync-w-empty-feat`: CLIP frames + temporal transformer + Synchformer sync.
    Video(VideoConditionerConfig),
    /// `t5`: T5-base encoder.
    Text(T5ConditionerConfig),
    /// `audio_autoencoder`: VAE-encoded audio prompt.
    Audio(AudioPromptConfig),
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
    /// The MAF block.
    pub gate_type_config: MafBlockConfig,
    /// Must be `rectified_flow`.
    pub diffusion_objective: DiffusionObjective,
    /// The transformer.
    pub config: DitConfig,
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

// ---------------------------------------------------------------------------------------------
// Hard-coded sizes of a small model
// ---------------------------------------------------------------------------------------------

/// `_tiny_hardcoded_sizes`: sizes the official constructors hard-code that a small test model
/// changes. Each entry of the file is `[this model's value, full-size value]`; entries this
/// crate does not use (and the second value of each pair) are ignored, as the official code
/// ignores the whole key. An absent entry keeps the component's default (the full size).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "RawHardcodedSizes")]
pub struct HardcodedSizes {
    /// Output tokens of the video conditioner (`video_prompt.proj` weight `[T·Q, Nv]`).
    pub video_tokens: Option<usize>,
    /// Synchformer rows of the video conditioner (`video_prompt.proj_sync` weight `[R, Nv]`).
    pub sync_rows: Option<usize>,
    /// Output tokens of the audio-prompt conditioner (`audio_prompt.proj_features_128`
    /// weight `[La, Na]`).
    pub audio_tokens: Option<usize>,
    /// The video conditioner's temporal transformer (`video_prompt.Temp_transformer`).
    pub temporal: Option<TemporalSizes>,
    /// The Synchformer (`synchformer`).
    pub synchformer: Option<SynchformerConfig>,
}

/// Sizes of the video conditioner's temporal transformer (its width is the CLIP width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TemporalSizes {
    /// Layers (4 at full size).
    pub depth: usize,
    /// Heads (16).
    pub heads: usize,
    /// Head size (64).
    pub dim_head: usize,
    /// MLP hidden width (3072).
    pub mlp_dim: usize,
}

/// `[this model's value, full-size value]`.
type Pair<T> = (T, serde::de::IgnoredAny);

#[derive(Deserialize)]
struct RawHardcodedSizes {
    #[serde(rename = "video_prompt.proj", default)]
    video_proj: Option<Pair<[usize; 2]>>,
    #[serde(rename = "video_prompt.proj_sync", default)]
    video_proj_sync: Option<Pair<[usize; 2]>>,
    #[serde(rename = "audio_prompt.proj_features_128", default)]
    audio_proj: Option<Pair<[usize; 2]>>,
    #[serde(rename = "video_prompt.Temp_transformer", default)]
    temporal: Option<Pair<TemporalSizes>>,
    #[serde(default)]
    synchformer: Option<Pair<SynchformerConfig>>,
}

impl From<RawHardcodedSizes> for HardcodedSizes {
    fn from(raw: RawHardcodedSizes) -> Self {
        HardcodedSizes {
            video_tokens: raw.video_proj.map(|([_, tokens], _)| tokens),
            sync_rows: raw.video_proj_sync.map(|([rows, _], _)| rows),
            audio_tokens: raw.audio_proj.map(|([_, tokens], _)| tokens),
            temporal: raw.temporal.map(|(t, _)| t),
            synchformer: raw.synchformer.map(|(s, _)| s),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing, composition and validation
// ---------------------------------------------------------------------------------------------

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

    /// Parses, composes and validates a config from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let mut config: ModelConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            Error::config(field, e.inner().to_string())
        })?;
        config.share_sizes();
        config.validate()?;
        config.derive_sizes();
        Ok(config)
    }

    /// Parses, composes and validates a config from an already parsed JSON value.
    pub fn from_json_value(value: &Value) -> Result<Self> {
        Self::from_json_str(&value.to_string())
    }

    /// Gives each component the sizes it does not hold itself but that another section (or
    /// `_tiny_hardcoded_sizes`) states: the condition width, the small model's hard-coded
    /// sizes. Plain copies, before validation.
    fn share_sizes(&mut self) {
        let cond_dim = self.model.conditioning.cond_dim;
        let sizes = self.hardcoded_sizes.clone();
        self.synchformer = sizes.synchformer.clone().unwrap_or_default();
        self.model.diffusion.gate_type_config.width = cond_dim;
        for c in &mut self.model.conditioning.configs {
            match &mut c.kind {
                ConditionerKind::Video(v) => {
                    if let Some(n) = sizes.video_tokens {
                        v.tokens = n;
                    }
                    if let Some(n) = sizes.sync_rows {
                        v.sync_rows = n;
                    }
                    if let Some(t) = sizes.temporal {
                        v.temporal.depth = t.depth;
                        v.temporal.heads = t.heads;
                        v.temporal.dim_head = t.dim_head;
                        v.temporal.mlp_dim = t.mlp_dim;
                    }
                }
                ConditionerKind::Text(t) => t.cond_dim = cond_dim,
                ConditionerKind::Audio(a) => {
                    a.cond_dim = cond_dim;
                    if let Some(n) = sizes.audio_tokens {
                        a.tokens = n;
                    }
                }
            }
        }
    }

    /// The sizes computed from several sections, once [`ModelConfig::validate`] has shown them
    /// representable: the DiT's context length (the three streams side by side) and, when the
    /// file gives none, its sequence length (latent frames + the time token); the audio
    /// prompt's length.
    fn derive_sizes(&mut self) {
        let streams = [
            self.video_conditioner().map_or(0, |v| v.tokens),
            self.text_conditioner().map_or(0, |t| t.max_length),
            self.audio_conditioner().map_or(0, |a| a.tokens),
        ];
        let latents = self.latent_length();
        let samples = self.prompt_samples();
        let dit = &mut self.model.diffusion.config;
        dit.context_tokens = streams.iter().fold(0usize, |n, &s| n.saturating_add(s));
        dit.latent_seq_len.get_or_insert(latents.saturating_add(1));
        for c in &mut self.model.conditioning.configs {
            if let ConditionerKind::Audio(a) = &mut c.kind {
                a.samples = samples;
            }
        }
    }

    /// Checks that the values describe a model this crate can build: each component's section
    /// on its own (its config type's `validate`), then what relates sections -- widths and
    /// channel counts that must agree, the three condition streams in the context order, the
    /// hard-coded sizes -- and that every size derived from them (products of strides, widths,
    /// sample counts) is representable. A bad value is an [`Error::Config`] naming its field.
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
        pre.validate("model.pretransform.config")?;
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
        dit.validate("model.diffusion.config")?;
        if dit.io_channels != pre.latent_dim {
            return Err(Error::config(
                "model.diffusion.config.io_channels",
                format!(
                    "{} differs from the VAE latent_dim {}",
                    dit.io_channels, pre.latent_dim
                ),
            ));
        }
        if dit.cond_dim != self.model.conditioning.cond_dim {
            return Err(Error::config(
                "model.diffusion.config.cond_token_dim",
                format!(
                    "{} differs from model.conditioning.cond_dim {}",
                    dit.cond_dim, self.model.conditioning.cond_dim
                ),
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
        // The gating network reads the three streams side by side.
        mul(
            "model.conditioning.cond_dim",
            self.model.conditioning.cond_dim,
            3,
        )?;
        diffusion
            .gate_type_config
            .validate("model.diffusion.gate_type_config")?;
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
                ConditionerKind::Video(v) => v.validate(&field)?,
                ConditionerKind::Text(t) => t.validate(&field)?,
                ConditionerKind::Audio(a) => a.validate(&field)?,
            }
        }
        self.check_hardcoded_sizes()
    }

    /// Checks the hard-coded sizes as the components hold them (the full size, or
    /// `_tiny_hardcoded_sizes` of a small model); errors name the `_tiny_hardcoded_sizes` entry.
    fn check_hardcoded_sizes(&self) -> Result<()> {
        let at = |k: &str| format!("_tiny_hardcoded_sizes.{k}");
        let video_tokens = self.video_conditioner().map_or(0, |v| v.tokens);
        let audio_tokens = self.audio_conditioner().map_or(0, |a| a.tokens);
        positive(at("video_prompt.proj"), video_tokens)?;
        positive(
            at("video_prompt.proj_sync"),
            self.video_conditioner().map_or(0, |v| v.sync_rows),
        )?;
        positive(at("audio_prompt.proj_features_128"), audio_tokens)?;
        if let Some(v) = self.video_conditioner() {
            let t = &v.temporal;
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
        }
        let s = &self.synchformer;
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
            ("frame_rate", s.frame_rate),
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
        video_tokens
            .checked_add(text_tokens)
            .and_then(|n| n.checked_add(audio_tokens))
            .ok_or_else(|| {
                Error::config(at("video_prompt.proj"), "the context token count overflows")
            })?;
        Ok(())
    }

    /// Latent frames the DiT works on: `sample_size / downsampling_ratio` (floor; 0 for a
    /// ratio of 0, which [`ModelConfig::validate`] refuses).
    pub fn latent_length(&self) -> usize {
        self.sample_size
            .checked_div(self.model.pretransform.config.downsampling_ratio)
            .unwrap_or(0)
    }

    /// Samples of a full-length output (`sample_rate * conditioning_seconds`), the length the
    /// reference trims to.
    pub fn output_samples(&self) -> usize {
        (self.sample_rate as usize).saturating_mul(self.conditioning_seconds as usize)
    }

    /// Samples of a full-length audio prompt (`sample_rate * conditioning_seconds`).
    pub fn prompt_samples(&self) -> usize {
        self.output_samples()
    }

    /// Number of CLIP frames a request carries (`conditioning_seconds * video_fps`).
    pub fn video_frames(&self) -> usize {
        (self.conditioning_seconds as usize).saturating_mul(self.video_fps as usize)
    }

    /// The main VAE (`model.pretransform.config`).
    pub fn vae(&self) -> &VaeConfig {
        &self.model.pretransform.config
    }

    /// The DiT (`model.diffusion.config`, with its context and sequence lengths).
    pub fn dit(&self) -> &DitConfig {
        &self.model.diffusion.config
    }

    /// The MAF block (`model.diffusion.gate_type_config`, with the condition width).
    pub fn maf(&self) -> &MafBlockConfig {
        &self.model.diffusion.gate_type_config
    }

    /// The conditioner with the given kind name (`video`, `text`, `audio`).
    fn conditioner(&self, kind: &str) -> Option<&ConditionerConfig> {
        self.model
            .conditioning
            .configs
            .iter()
            .find(|c| c.kind.name() == kind)
    }

    /// The text conditioner's config (the T5 sizes and tokenizer come from its folder:
    /// [`T5ConditionerConfig::with_hf_dir`]).
    pub fn text_conditioner(&self) -> Option<&T5ConditionerConfig> {
        match &self.conditioner("text")?.kind {
            ConditionerKind::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The video conditioner's config (the CLIP sizes come from its folder:
    /// [`VideoConditionerConfig::with_clip`]).
    pub fn video_conditioner(&self) -> Option<&VideoConditionerConfig> {
        match &self.conditioner("video")?.kind {
            ConditionerKind::Video(v) => Some(v),
            _ => None,
        }
    }

    /// The audio-prompt conditioner's config.
    pub fn audio_conditioner(&self) -> Option<&AudioPromptConfig> {
        match &self.conditioner("audio")?.kind {
            ConditionerKind::Audio(a) => Some(a),
            _ => None,
        }
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
        fn parse<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            i: usize,
            kind: &str,
            config: &Value,
        ) -> std::result::Result<T, E> {
            serde_path_to_error::deserialize(config).map_err(|e| {
                E::custom(format!(
                    "configs[{i}].config ({kind}): {} at {}",
                    e.inner(),
                    e.path()
                ))
            })
        }
        let raw = Raw::deserialize(de)?;
        let mut configs = Vec::with_capacity(raw.configs.len());
        for (i, c) in raw.configs.into_iter().enumerate() {
            let kind = match c.kind.as_str() {
                VideoConditionerConfig::TYPE => {
                    ConditionerKind::Video(parse::<_, D::Error>(i, &c.kind, &c.config)?)
                }
                T5ConditionerConfig::TYPE => {
                    ConditionerKind::Text(parse::<_, D::Error>(i, &c.kind, &c.config)?)
                }
                AudioPromptConfig::TYPE => {
                    ConditionerKind::Audio(parse::<_, D::Error>(i, &c.kind, &c.config)?)
                }
                other => {
                    return Err(D::Error::custom(format!(
                        "configs[{i}].type: unsupported conditioner type `{other}` \
                         (expected {}, {} or {})",
                        VideoConditionerConfig::TYPE,
                        T5ConditionerConfig::TYPE,
                        AudioPromptConfig::TYPE
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
    const OFFICIAL: &str = OFFICIAL_INFER_CONFIG;

    #[test]
    fn official_config_parses_with_full_sizes() {
        let c = ModelConfig::from_json_str(OFFICIAL).unwrap();
        assert_eq!(c.latent_length(), 236);
        assert_eq!(c.output_samples(), 441_000);
        let dit = c.dit();
        assert_eq!((dit.heads(), dit.head_dim), (64, 24));
        assert_eq!(dit.ffn_hidden(), 4096);
        // The sizes one section takes from others, composed.
        assert_eq!((dit.context_tokens, dit.seq_len()), (384, 237));
        assert_eq!(c.maf().width, c.model.conditioning.cond_dim);
        assert_eq!(c.hardcoded_sizes, HardcodedSizes::default());
        assert_eq!(c.synchformer, SynchformerConfig::default());
        assert_eq!(c.text_conditioner().unwrap().max_length, 128);
        let audio = c.audio_conditioner().unwrap();
        assert_eq!((audio.latent_frames, audio.tokens), (215, 128));
        assert_eq!(audio.samples, c.prompt_samples());
        let video = c.video_conditioner().unwrap();
        assert_eq!(
            (video.frames(), video.tokens, video.sync_rows),
            (50, 128, 240)
        );
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
    fn odd_strides_are_refused() {
        // Kernel 2s with padding ceil(s / 2): stride 5 up-samples 24 frames to 119 samples.
        let err = edited(|j| {
            let strides = &mut vae(j)["encoder"]["config"]["strides"];
            let ratio: u64 = strides
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
                .product();
            strides[0] = 5.into();
            let first = ratio / 2 * 5;
            vae(j)["downsampling_ratio"] = first.into();
            vae(j)["decoder"]["config"]["strides"][0] = 5.into();
        })
        .unwrap_err();
        assert_eq!(
            field_of(err),
            "model.pretransform.config.encoder.config.strides[0]"
        );
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
        // Strides (even, as every stride must be) whose product does not fit in usize.
        let huge = serde_json::json!([u32::MAX - 1, u32::MAX - 1, u32::MAX - 1, 2, 2]);
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
        let video = c.video_conditioner().unwrap();
        let audio = c.audio_conditioner().unwrap();
        assert_eq!((video.tokens, video.sync_rows, audio.tokens), (8, 240, 6));
        assert_eq!((video.temporal.depth, video.temporal.mlp_dim), (2, 128));
        assert_eq!(c.synchformer, SynchformerConfig::default());
        // The DiT's context: the three streams side by side.
        let text = c.text_conditioner().unwrap().max_length;
        assert_eq!(c.dit().context_tokens, 8 + text + 6);

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
    fn the_sequence_length_follows_the_sample_size_when_not_given() {
        let ratio = ModelConfig::official().vae().downsampling_ratio;
        let c = edited(|j| j["sample_size"] = (ratio * 100).into()).unwrap();
        assert_eq!((c.latent_length(), c.dit().seq_len()), (100, 101));
        let err = edited(|j| {
            j["sample_size"] = (ratio * 100).into();
            j["model"]["diffusion"]["config"]["_latent_seq_len"] = 237.into();
        })
        .unwrap_err();
        assert_eq!(field_of(err), "model.diffusion.config._latent_seq_len");
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(ModelConfig::from_json_str("{ nope").is_err());
        assert!(ModelConfig::from_json_str("").is_err());
    }
}
