//! The video conditioner (`clip-with-sync-w-empty-feat`,
//! `CLIPWithSyncWithEmptyFeatureConditioner`).
//!
//! For frames `[B, T, 3, H, W]` holding pixel values 0..255 and Synchformer features
//! `[B, R, D]` (R = 240):
//!
//! 1. an item whose frames are all exactly 0 is "no video": its output is the learned
//!    `empty_visual_feat` `[Nv, D]` and nothing else is computed for it (the reference computes
//!    and discards CLIP, the temporal transformer and the projections for it);
//! 2. the other items' frames are CLIP-normalised and run through CLIP -> `[B'·T, Q, D]`
//!    (last hidden state, before `post_layernorm`);
//! 3. regrouped per token index `[B'·Q, T, D]`, plus `Temp_pos_embedding` `[1, T, D]`, through
//!    the temporal transformer;
//! 4. regrouped to `[B', T·Q, D]` in (frame, token) order, then **reinterpreted in memory** as
//!    `B'·D` rows of `T·Q` values, projected by `proj` (T·Q -> Nv) and reinterpreted as
//!    `[B', Nv, D]`;
//! 5. the sync features get the same reinterpretation around `proj_sync` (R -> Nv);
//! 6. `tokens = step 4 + sync_weight · step 5`.
//!
//! The mask is ones `[B, 1]`.

use std::path::Path;

use audiox_core::precision::linear;
use audiox_core::weights::{Component, Layout, LoadReport, StateDict, WeightSource, load_module};
use audiox_core::{Error, Result};
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::Condition;
use super::temporal::{TemporalTransformer, TemporalTransformerConfig};
use crate::clip::{ClipVision, ClipVisionConfig, normalize_pixels};

/// Seconds of video the conditioner's sizes are built for.
/// upstream: hard-coded in the conditioner, independent of the model config.
pub const VIDEO_SECONDS: usize = 10;
/// The conditioner's frame rate when its config sets none (the official default).
pub const DEFAULT_VIDEO_FPS: usize = 5;

/// Official name of the scalar sync gain (stored with shape `[]`).
/// Official name of the CLIP tower inside the conditioner.
const CLIP_FIELD: &str = "visual_encoder_model";

fn default_mask_type() -> String {
    "input".into()
}
fn default_sync_type() -> String {
    "add".into()
}
fn official_tokens() -> usize {
    VideoConditionerConfig::OFFICIAL_TOKENS
}
fn official_sync_rows() -> usize {
    VideoConditionerConfig::OFFICIAL_SYNC_ROWS
}
fn official_temporal() -> TemporalTransformerConfig {
    // upstream: hard-coded in the conditioner (4 layers of 16 heads of 64, MLP 3072) at the
    // CLIP width.
    TemporalTransformerConfig::new(ClipVisionConfig::vit_b32().hidden_size, 4, 16, 64, 3072)
}

/// Sizes and settings of a [`VideoConditioner`]: the `config` of the official config's
/// `clip-with-sync-w-empty-feat` conditioner, deserialized under its official names, plus the
/// sizes the official constructor hard-codes (documented defaults, not read from the section)
/// and the CLIP tower's sizes (from its Hugging Face `config.json`, see
/// [`VideoConditionerConfig::with_clip`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Frames per second of the CLIP stream; 5 (`DEFAULT_VIDEO_FPS`) when absent (the official
    /// default). Fixes the frame count, see [`VideoConditionerConfig::frames`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_fps: Option<u32>,
    /// Frames per request T when a small test model changes it (not in the section); `None`:
    /// the official rule, see [`VideoConditionerConfig::frames`].
    #[serde(skip)]
    pub frame_count: Option<usize>,
    /// The CLIP vision tower (not in the section; default
    /// [`ClipVisionConfig::vit_b32`]).
    #[serde(skip, default = "ClipVisionConfig::vit_b32")]
    pub clip: ClipVisionConfig,
    /// Output tokens Nv (hard-coded upstream: [`VideoConditionerConfig::OFFICIAL_TOKENS`]).
    #[serde(skip, default = "official_tokens")]
    pub tokens: usize,
    /// Rows R of the Synchformer features (hard-coded upstream:
    /// [`VideoConditionerConfig::OFFICIAL_SYNC_ROWS`]).
    #[serde(skip, default = "official_sync_rows")]
    pub sync_rows: usize,
    /// The temporal transformer (its width is the CLIP width; hard-coded upstream: 4 layers of
    /// 16 heads of 64, MLP 3072).
    #[serde(skip, default = "official_temporal")]
    pub temporal: TemporalTransformerConfig,
}

impl VideoConditionerConfig {
    /// The conditioner's `type` in the official config.
    pub const TYPE: &str = "clip-with-sync-w-empty-feat";
    /// Output tokens of the official conditioner (`proj` / `proj_sync` output).
    pub const OFFICIAL_TOKENS: usize = 128;
    /// Rows of the Synchformer features the official conditioner takes (`proj_sync` input).
    pub const OFFICIAL_SYNC_ROWS: usize = 240;

    /// The same with the CLIP tower `clip` (the temporal transformer takes its width).
    pub fn with_clip(mut self, clip: ClipVisionConfig) -> Self {
        self.temporal.dim = clip.hidden_size;
        self.clip = clip;
        self
    }

    /// Frames per request T: [`VideoConditionerConfig::frame_count`] when set, else 10 seconds
    /// (`VIDEO_SECONDS`) at the section's `video_fps`.
    /// upstream: the seconds are hard-coded in the conditioner, independent of the model
    /// config.
    pub fn frames(&self) -> usize {
        self.frame_count.unwrap_or_else(|| {
            VIDEO_SECONDS.saturating_mul(self.video_fps.map_or(DEFAULT_VIDEO_FPS, |f| f as usize))
        })
    }

    /// Checks the section: only what AudioX-Turbo uses (no input masking, sync features
    /// added). `at` is the section's dotted path in its file.
    pub fn validate(&self, at: &str) -> Result<()> {
        if self.mask_ratio != 0.0 {
            return Err(Error::config(
                format!("{at}.mask_ratio"),
                "only 0 is supported",
            ));
        }
        if self.sync_type != "add" {
            return Err(Error::config(
                format!("{at}.sync_type"),
                "only `add` is supported",
            ));
        }
        Ok(())
    }

    /// Builds the conditioner (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> VideoConditioner {
        let d = self.clip.hidden_size;
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 1.0,
        };
        VideoConditioner {
            visual_encoder_model: self.clip.init(device),
            temp_pos_embedding: normal.init([1, self.frames(), d], device),
            temp_transformer: self.temporal.init(device),
            proj: LinearConfig::new(self.frames() * self.clip.tokens(), self.tokens).init(device),
            proj_sync: LinearConfig::new(self.sync_rows, self.tokens).init(device),
            sync_weight: Initializer::Zeros.init([1], device),
            empty_visual_feat: Initializer::Zeros.init([1, self.tokens, d], device),
        }
    }
}

/// The video conditioner. See the docs at the top of `conditioners/video.rs`.
#[derive(Module, Debug)]
pub struct VideoConditioner {
    /// The CLIP vision tower (official `visual_encoder_model.*`).
    pub visual_encoder_model: ClipVision,
    /// Position table over frames `[1, T, D]` (official `Temp_pos_embedding`).
    pub temp_pos_embedding: Param<Tensor<3>>,
    /// Temporal transformer (official `Temp_transformer.*`).
    pub temp_transformer: TemporalTransformer,
    /// `T·Q -> Nv`.
    pub proj: Linear,
    /// `R -> Nv`.
    pub proj_sync: Linear,
    /// Gain of the sync branch. Officially a 0-d tensor; held as `[1]` (burn has no 0-d
    /// tensors; [`VideoConditioner::load`] reads the scalar).
    pub sync_weight: Param<Tensor<1>>,
    /// Output for an item without video `[1, Nv, D]`.
    pub empty_visual_feat: Param<Tensor<3>>,
}

/// Intermediate values of the video conditioner on every item (parity checks; the real
/// forward pass skips items without video).
#[derive(Debug, Clone)]
pub struct VideoTrace {
    /// CLIP last hidden state of all frames `[B·T, Q, D]`.
    pub clip: Tensor<3>,
    /// Temporal transformer output `[B·Q, T, D]`.
    pub temporal: Tensor<3>,
    /// `proj` output `[B·D, Nv]`.
    pub proj: Tensor<2>,
    /// `proj_sync` output `[B·D, Nv]`.
    pub proj_sync: Tensor<2>,
    /// The condition.
    pub condition: Condition,
}

impl VideoConditioner {
    /// How our parameter paths map to the official names (relative to the conditioner:
    /// load with the prefix `conditioner.conditioners.video_prompt.`). `sync_weight` is a 0-d
    /// scalar in the checkpoint and `[1]` here.
    pub fn layout() -> Layout {
        let layout = Layout::new()
            .rename(r"^temp_pos_embedding$", "Temp_pos_embedding")
            .scalar(r"^sync_weight$");
        TemporalTransformer::layout_rules(layout, "temp_transformer.", "Temp_transformer.")
    }

    fn sizes(&self) -> (usize, usize, usize, usize) {
        let [_, t, d] = self.temp_pos_embedding.shape().dims();
        let [rows, nv] = self.proj_sync.weight.shape().dims();
        (t, d, rows, nv)
    }

    /// Frames per request (T).
    pub fn frames(&self) -> usize {
        self.sizes().0
    }

    /// Output tokens (Nv).
    pub fn tokens(&self) -> usize {
        self.sizes().3
    }

    /// Side of the square frames the CLIP tower takes, in pixels.
    pub fn image_size(&self) -> usize {
        self.visual_encoder_model.image_size()
    }

    /// Rows (R) of the Synchformer features the conditioner takes.
    pub fn sync_rows(&self) -> usize {
        self.sizes().2
    }

    /// The weights of a Hugging Face CLIP folder (`model.safetensors` or `pytorch_model.bin`)
    /// in the conditioner's names (`visual_encoder_model.*`), or `None` when the folder has
    /// no weight file. The official loader reads them first and lets the checkpoint's copy
    /// override them: pass them as the first source of [`VideoConditioner::load`].
    pub fn clip_weights(clip_dir: &Path) -> Result<Option<StateDict>> {
        match crate::hf_weights_file_if_any(clip_dir) {
            Some(path) => Ok(Some(Self::clip_weights_of(&StateDict::open(path)?))),
            None => Ok(None),
        }
    }

    /// The tensors of a Hugging Face CLIP weight file already opened (for instance from
    /// memory, [`StateDict::from_safetensors_bytes`]) in the conditioner's names, as
    /// [`VideoConditioner::clip_weights`] gives them.
    pub fn clip_weights_of(dict: &StateDict) -> StateDict {
        dict.rename(|k, _| Some(format!("{CLIP_FIELD}.{k}")))
    }

    /// Checks frames `[B, T, C, H, W]` and sync features `[B, R, D]`.
    fn check_inputs(&self, frames: &[usize; 5], sync: &[usize; 3]) -> Result<()> {
        let (t, d, rows, _) = self.sizes();
        let s = self.visual_encoder_model.image_size();
        let channels = self.visual_encoder_model.channels();
        let [b, ft, c, h, w] = *frames;
        if b == 0 || ft != t || c != channels || h != s || w != s {
            return Err(Error::input_shape(
                "video frames",
                format!("[B >= 1, {t} frames, {channels} channels, {s}, {s}]"),
                frames,
            ));
        }
        if *sync != [b, rows, d] {
            return Err(Error::input_shape(
                "sync features",
                format!("[{b}, {rows}, {d}]"),
                sync,
            ));
        }
        Ok(())
    }

    /// Which items have no video (every pixel exactly 0).
    pub fn empty_items(frames: &Tensor<5>) -> Vec<bool> {
        let [b, ..] = frames.dims();
        let peak = frames.clone().abs().reshape([b as i32, -1]).max_dim(1);
        let peak: Vec<f32> = audiox_core::tensor::to_vec(peak);
        peak.iter().map(|&p| p == 0.0).collect()
    }

    /// CLIP last hidden state `[B·T, Q, D]` of frames `[B, T, 3, H, W]` (values 0..255).
    pub fn clip_features(&self, frames: Tensor<5>) -> Result<Tensor<3>> {
        let [b, t, c, h, w] = frames.dims();
        let pixels = normalize_pixels(frames.reshape([b * t, c, h, w]));
        self.visual_encoder_model.forward(pixels)
    }

    /// Temporal transformer over frames, per item and CLIP token: `[B·T, Q, D]` ->
    /// `[B·Q, T, D]`.
    pub fn temporal(&self, clip: Tensor<3>) -> Tensor<3> {
        let [bt, q, d] = clip.dims();
        let t = self.frames();
        let b = bt / t;
        let x = clip
            .reshape([b, t, q, d])
            .swap_dims(1, 2)
            .reshape([b * q, t, d]);
        self.temp_transformer
            .forward(x + self.temp_pos_embedding.val())
    }

    /// `proj` on the temporal output `[B·Q, T, D]`: `[B·D, Nv]`.
    pub fn project(&self, temporal: Tensor<3>) -> Tensor<2> {
        let [bq, t, d] = temporal.dims();
        let q = self.visual_encoder_model.tokens();
        let b = bq / q;
        // (b q) t d -> b (t q) d, contiguous.
        let x = temporal.reshape([b, q, t, d]).swap_dims(1, 2);
        // upstream: the [B, T·Q, D] buffer is re-read as B·D rows of T·Q values (a memory
        // reinterpretation, not a transpose); the weights were trained on this layout.
        linear(&self.proj, x.reshape([b * d, t * q]))
    }

    /// `proj_sync` on sync features `[B, R, D]`: `[B·D, Nv]`.
    pub fn project_sync(&self, sync: Tensor<3>) -> Tensor<2> {
        let [b, rows, d] = sync.dims();
        // upstream: the same memory reinterpretation, [B, R, D] read as B·D rows of R.
        linear(&self.proj_sync, sync.reshape([b * d, rows]))
    }

    /// `proj(...) + sync_weight · proj_sync(...)`, each `[B·D, Nv]` re-read as `[B, Nv, D]`.
    fn combine(&self, proj: Tensor<2>, proj_sync: Tensor<2>) -> Tensor<3> {
        let [bd, nv] = proj.dims();
        let d = self.sizes().1;
        let b = bd / d;
        // upstream: `[B·D, Nv]` re-read as `[B, Nv, D]` (memory reinterpretation).
        let video = proj.reshape([b, nv, d]);
        let sync = proj_sync.reshape([b, nv, d]);
        video + sync * self.sync_weight.val().reshape([1, 1, 1])
    }

    /// Condition tokens `[B, Nv, D]` (and the mask, ones `[B, 1]`) for frames
    /// `[B, T, 3, H, W]` holding pixel values 0..255 and sync features `[B, R, D]`.
    /// Items without video skip every computation (see the docs at the top of
    /// `conditioners/video.rs`).
    pub fn forward(&self, frames: Tensor<5>, sync: Tensor<3>) -> Result<Condition> {
        self.check_inputs(&frames.dims(), &sync.dims())?;
        let device = frames.device();
        let [b, ..] = frames.dims();
        let empty = Self::empty_items(&frames);
        let active: Vec<i64> = (0..b as i64).filter(|&i| !empty[i as usize]).collect();
        let (t_frames, t_sync) = if active.len() == b {
            (frames, sync)
        } else if active.is_empty() {
            let (_, d, _, nv) = self.sizes();
            return Ok(Condition {
                tokens: self.empty_visual_feat.val().expand([b, nv, d]),
                mask: Tensor::ones([b, 1], &device),
            });
        } else {
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(active.clone(), [active.len()]),
                &device,
            );
            (frames.select(0, idx.clone()), sync.select(0, idx))
        };
        let clip = self.clip_features(t_frames)?;
        let computed = self.combine(self.project(self.temporal(clip)), self.project_sync(t_sync));
        let tokens = if active.len() == b {
            computed
        } else {
            let empty_feat = self.empty_visual_feat.val();
            let mut parts = Vec::with_capacity(b);
            let mut next = 0;
            for &is_empty in &empty {
                if is_empty {
                    parts.push(empty_feat.clone());
                } else {
                    parts.push(computed.clone().narrow(0, next, 1));
                    next += 1;
                }
            }
            Tensor::cat(parts, 0)
        };
        Ok(Condition {
            tokens,
            mask: Tensor::ones([b, 1], &device),
        })
    }

    /// The reference's computation on **every** item, keeping the intermediates; items without
    /// video are then replaced by `empty_visual_feat`. Same result as
    /// [`VideoConditioner::forward`], at the reference's cost (parity checks).
    pub fn forward_trace(&self, frames: Tensor<5>, sync: Tensor<3>) -> Result<VideoTrace> {
        self.check_inputs(&frames.dims(), &sync.dims())?;
        let device = frames.device();
        let [b, ..] = frames.dims();
        let empty = Self::empty_items(&frames);
        let clip = self.clip_features(frames)?;
        let temporal = self.temporal(clip.clone());
        let proj = self.project(temporal.clone());
        let proj_sync = self.project_sync(sync);
        let mut tokens = self.combine(proj.clone(), proj_sync.clone());
        let (_, d, _, nv) = self.sizes();
        for (i, &is_empty) in empty.iter().enumerate() {
            if is_empty {
                tokens = tokens.slice_assign([i..i + 1, 0..nv, 0..d], self.empty_visual_feat.val());
            }
        }
        Ok(VideoTrace {
            clip,
            temporal,
            proj,
            proj_sync,
            condition: Condition {
                tokens,
                mask: Tensor::ones([b, 1], &device),
            },
        })
    }
}

impl Component for VideoConditioner {
    type Config = VideoConditionerConfig;

    /// Builds the conditioner and loads it from `sources` (later sources override earlier
    /// ones per parameter; each is looked up under its prefix, normally
    /// `conditioner.conditioners.video_prompt.` for a checkpoint, and see
    /// [`VideoConditioner::clip_weights`] for the CLIP folder's copy).
    fn load(
        config: &VideoConditionerConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        load_module(config.init(device), &Self::layout(), sources)
    }
}
