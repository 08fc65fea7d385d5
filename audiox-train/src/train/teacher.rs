//! The teacher stage: the DiT, the MAF block, the small T5 and the conditioners' trainable
//! parts, trained jointly by rectified flow with condition dropout ([`super::flow`]) on latents
//! of the trained (frozen) VAE.
//!
//! **The context** is computed as `audiox`'s `generate` computes it for a text-only request:
//!
//! * text: the T5 tokenizer (the demo vocabulary, padded to the config's `max_length`) and the
//!   T5 encoder, padded positions zeroed ([`TeacherModel::text_tokens`]);
//! * video: all-zero frames and sync features through the video conditioner, which returns its
//!   learned `empty_visual_feat` (the CLIP tower, the temporal transformer and the projections
//!   never run, so they keep their seeded initial weights: the demo model does not follow
//!   video);
//! * audio prompt: the silent prompt through the prompt VAE (the trained VAE's encoder, frozen:
//!   its output for silence is computed once, [`SilentPrompt`]), a posterior sample with fresh
//!   noise per row, then the trainable `proj_features_128` and `proj_out`;
//! * the MAF block fuses the three streams (upstream call order, see `audiox_mmdit::MafBlock`).
//!
//! The T5 encoder is trained here, jointly with the DiT through the flow loss (no separate
//! text objective). Condition dropout zeroes a row's whole fused context, the null condition
//! the samplers' classifier-free guidance uses.
//!
//! **The data**: each batch row is a training clip drawn uniformly from the first
//! `clip_pool` clips of the corpus's training stream (by the step's random stream); its clean
//! latent is the **posterior mean** of the frozen VAE encoder: deterministic (so it can be
//! cached, and a resumed run sees the same latents), and free of the posterior noise the
//! decoder was trained to tolerate anyway. Latents are cached per clip index, in memory and in
//! the run folder ([`super::latent_store`], written after each checkpoint), so the encoder runs
//! once per clip and run, and a resumed run reads the latents its predecessor computed.
//!
//! Every frozen computation (VAE encoder) runs on the device without autodiff, where
//! `audiox_kernels`' fast CPU paths apply; everything trained runs on the autodiff device,
//! where those kernels step aside for burn's own (differentiable) operations.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use audiox_core::weights::{Component, Layout, StateDict, WeightSource};
use audiox_encoders::clip::ClipVisionConfig;
use audiox_encoders::conditioners::{VideoConditioner, VideoConditionerConfig};
use audiox_encoders::t5::{T5Config, T5Encoder};
use audiox_encoders::tokenizer::T5Tokenizer;
use audiox_mmdit::{Dit, MafBlock};
use audiox_vae::{OobleckEncoder, Posterior, Vae};

use super::checkpoint::{Checkpoints, write_atomic};
use super::error::{TrainError, TrainResult};
use super::export::{official_tensors_of, write_safetensors};
use super::flow::{TimeSampler, drop_condition, flow_loss, flow_loss_conditioned, normals};
use super::grow::{TeacherInit, blocks_to_add, grown_teacher, source_root};
use super::init::random_init;
use super::latent_store::{LatentKey, LatentStore};
use super::run::{LoopSettings, RunConfig, RunDir, StageName};
use super::stage::{Stage, StepLoss};
use super::timeline::{
    TimelineBasis, TimelineLoss, timeline_batch_projected, timeline_loss, with_oracle,
};
use crate::corpus::{Clip, Corpus, RenderedEvent};
use crate::tokenizer::demo_tokenizer_json;

/// Official key prefixes of the model object (as `audiox` loads them).
mod prefixes {
    pub const DIT: &str = "model.model.";
    pub const MAF: &str = "maf_block.";
    pub const VIDEO: &str = "conditioner.conditioners.video_prompt.";
    pub const AUDIO: &str = "conditioner.conditioners.audio_prompt.";
    /// The CLIP tower inside the video conditioner (written to the CLIP folder instead).
    pub const CLIP_IN_VIDEO: &str = "visual_encoder_model.";
}

/// The teacher stage's settings (`RunConfig::teacher`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherStageConfig {
    /// The optimisation loop.
    #[serde(flatten)]
    pub optim: LoopSettings,
    /// Probability that a row's condition is dropped (its fused context zeroed), for
    /// classifier-free guidance.
    pub cond_dropout: f64,
    /// How training times are drawn.
    pub time_sampler: TimeSampler,
    /// Batch rows are drawn from the first this many training clips (their latents are
    /// cached in memory).
    pub clip_pool: u64,
    /// The T5 encoder's Hugging Face `config.json` (its `d_model` must equal the model's
    /// `cond_dim`, its `vocab_size` cover the demo tokenizer).
    pub t5: serde_json::Value,
    /// The CLIP vision tower's Hugging Face `config.json` (its `hidden_size` must equal the
    /// model's `cond_dim`; never run by a text-only request).
    pub clip: serde_json::Value,
    /// Masked audio prompts (`None`, the default: every row gets the silent prompt, as the
    /// demo teachers up to T5 were trained). See [`PromptMasking`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_prompt: Option<PromptMasking>,
    /// Timeline supervision of the conditioning (`None`, the default: the flow loss alone, as
    /// the demo teachers up to T5 were trained). See [`super::timeline`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineLoss>,
    /// `</s>` tokens the demo tokenizer appends after each caption's own (0, the default: none,
    /// as the demo teachers up to TW1 were trained): real tokens whose T5 outputs depend on
    /// the caption, so that the caption reaches the DiT's positions through more tokens
    /// ([`crate::tokenizer::demo_tokenizer_json`]). At most the text conditioner's
    /// `max_length` minus [`crate::tokenizer::LONGEST_CAPTION_TOKENS`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub text_fill: usize,
    /// Distinct slot tokens `<slot_0>`, `<slot_1>`, ... the demo tokenizer puts before each
    /// caption (0, the default: none, as the demo teachers up to TF1 were trained): each has
    /// its own embedding and the same index for every caption, so the T5 output at slot `i`
    /// reaches the DiT's positions through the same column of the token-to-position map
    /// ([`crate::tokenizer::demo_tokenizer_json`]). The T5 `vocab_size` must cover them, and
    /// slots, fill and the longest caption must fit the text conditioner's `max_length`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub text_slots: usize,
    /// Start from another run's trained teacher instead of random weights, with the DiT
    /// optionally deeper (`None`, the default: a seeded random start). Read only when the stage
    /// has no checkpoint yet. See [`super::grow`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<TeacherInit>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Audio prompts made from the training clip itself with a span blanked, so that the teacher
/// learns to continue and inpaint audio (the reference trained with the target clip as its own
/// prompt, 25-75 % of it blanked at a random place; `docs/reference-model.md` 2.3).
///
/// **In latent space**: the blanked frames of a row's prompt latents are the silent prompt's
/// posterior sample, the kept frames the clip's cached posterior mean. At inference the prompt
/// VAE encodes the blanked audio itself; the two differ only in the few frames next to a
/// span's edge (the encoder's receptive field) and in the kept frames' posterior noise (the
/// latent store holds means only). Encoding every row's masked audio instead would cost one VAE
/// encoder pass per prompted row and step: the demo pool's encoding took 0.12 s per clip on two
/// threads, so 1-2 s for the 8-16 prompted rows of a demo batch, against 2.6 s for the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptMasking {
    /// Probability that a row's prompt is its own clip with a span blanked; the other rows get
    /// the silent prompt (what a request without an audio prompt gives the model).
    pub clip_share: f64,
    /// The blanked share of the clip, drawn uniformly from `[lo, hi]` (the reference:
    /// `[0.25, 0.75]`).
    pub blank_ratio: [f64; 2],
    /// Probability that a clip prompt's blanked span runs to the clip's end (the continuation
    /// form long-form windows use: the first seconds kept); otherwise the span starts at a
    /// uniformly random frame (the reference's inpainting form).
    pub to_end_share: f64,
}

impl PromptMasking {
    /// Checks the shares and the ratio range; `section` names the setting in errors
    /// (`teacher.audio_prompt`).
    pub fn check(&self, section: &str) -> TrainResult<()> {
        let probability = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(TrainError::config(
                    format!("{section}.{name}"),
                    format!("{p} is not a probability"),
                ))
            }
        };
        probability("clip_share", self.clip_share)?;
        probability("to_end_share", self.to_end_share)?;
        let [lo, hi] = self.blank_ratio;
        if !(0.0 <= lo && lo <= hi && hi <= 1.0) {
            return Err(TrainError::config(
                format!("{section}.blank_ratio"),
                format!("[{lo}, {hi}] is not a range within [0, 1]"),
            ));
        }
        Ok(())
    }

    /// The blanked frames of each of `rows` prompts of `frames` latent frames: `None` for a
    /// silent prompt (every frame blank), else the blanked span. Draws, per row, from `rng`:
    /// whether the clip is its prompt, then (only then) the ratio, whether the span runs to
    /// the end, and its start.
    pub fn draw(
        &self,
        rng: &mut ChaCha8Rng,
        rows: usize,
        frames: usize,
    ) -> Vec<Option<Range<usize>>> {
        let unit = |rng: &mut ChaCha8Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (0..rows)
            .map(|_| {
                if unit(rng) >= self.clip_share {
                    return None;
                }
                let [lo, hi] = self.blank_ratio;
                let ratio = lo + (hi - lo) * unit(rng);
                let len = ((ratio * frames as f64).round() as usize).min(frames);
                let to_end = unit(rng) < self.to_end_share;
                let start = rng.next_u64() % (frames - len + 1) as u64;
                let start = if to_end { frames - len } else { start as usize };
                Some(start..start + len)
            })
            .collect()
    }
}

impl TeacherStageConfig {
    /// The T5 sizes.
    pub fn t5_config(&self) -> TrainResult<T5Config> {
        Ok(T5Config::from_hf_json(&self.t5)?)
    }

    /// The CLIP sizes.
    pub fn clip_config(&self) -> TrainResult<ClipVisionConfig> {
        Ok(ClipVisionConfig::from_hf_json(&self.clip)?)
    }

    /// Checks the settings against the model config.
    pub(crate) fn check(
        &self,
        model: &audiox::ModelConfig,
        clip_samples: usize,
    ) -> TrainResult<()> {
        self.optim.check("teacher")?;
        if !(0.0..=1.0).contains(&self.cond_dropout) {
            return Err(TrainError::config(
                "teacher.cond_dropout",
                format!("{} is not a probability", self.cond_dropout),
            ));
        }
        if self.clip_pool == 0 {
            return Err(TrainError::config(
                "teacher.clip_pool",
                "must be at least 1",
            ));
        }
        let cond_dim = model.model.conditioning.cond_dim;
        let t5 = self.t5_config()?;
        if t5.d_model != cond_dim {
            return Err(TrainError::config(
                "teacher.t5.d_model",
                format!(
                    "{} differs from the model's cond_dim {cond_dim}",
                    t5.d_model
                ),
            ));
        }
        let vocab = crate::tokenizer::vocab_size(
            &serde_json::from_str(&demo_tokenizer_json(self.text_fill, self.text_slots))
                .map_err(|e| TrainError::config("tokenizer", e.to_string()))?,
        );
        if t5.vocab_size < vocab {
            return Err(TrainError::config(
                "teacher.t5.vocab_size",
                format!(
                    "{} is smaller than the demo tokenizer's {vocab} pieces",
                    t5.vocab_size
                ),
            ));
        }
        if self.text_fill > 0 || self.text_slots > 0 {
            let max_length = model.text_conditioner().map_or(0, |t| t.max_length);
            let extra = self.text_fill + self.text_slots;
            if extra + crate::tokenizer::LONGEST_CAPTION_TOKENS > max_length {
                let field = if self.text_slots > 0 {
                    "teacher.text_slots"
                } else {
                    "teacher.text_fill"
                };
                return Err(TrainError::config(
                    field,
                    format!(
                        "{} fill and {} slot tokens leave no room for captions of up to {} \
                         tokens in the text conditioner's max_length {max_length}",
                        self.text_fill,
                        self.text_slots,
                        crate::tokenizer::LONGEST_CAPTION_TOKENS
                    ),
                ));
            }
        }
        let clip = self.clip_config()?;
        if clip.hidden_size != cond_dim {
            return Err(TrainError::config(
                "teacher.clip.hidden_size",
                format!(
                    "{} differs from the model's cond_dim {cond_dim}",
                    clip.hidden_size
                ),
            ));
        }
        if let Some(masking) = &self.audio_prompt {
            masking.check("teacher.audio_prompt")?;
            let prompt_frames = model
                .prompt_samples()
                .checked_div(model.vae().downsampling_ratio)
                .unwrap_or(0);
            if prompt_frames != model.latent_length() {
                return Err(TrainError::config(
                    "teacher.audio_prompt",
                    format!(
                        "masked prompts are built from the clip's latents: the prompt's {prompt_frames} \
                         latent frames must equal the clip's {}",
                        model.latent_length()
                    ),
                ));
            }
        }
        if let Some(timeline) = &self.timeline {
            timeline.check("teacher.timeline")?;
            if timeline.pretrain_steps >= self.optim.steps {
                return Err(TrainError::config(
                    "teacher.timeline.pretrain_steps",
                    format!(
                        "{} leaves none of the {} steps for the flow loss",
                        timeline.pretrain_steps, self.optim.steps
                    ),
                ));
            }
            let width = model.dit().width;
            if width < super::timeline::CHANNELS {
                return Err(TrainError::config(
                    "teacher.timeline",
                    format!(
                        "the DiT's width {width} is below the {} supervised channels",
                        super::timeline::CHANNELS
                    ),
                ));
            }
        }
        let latents = model.latent_length() * model.vae().downsampling_ratio;
        if clip_samples != model.sample_size || latents != model.sample_size {
            return Err(TrainError::config(
                "sample_size",
                format!(
                    "{} must equal a corpus clip ({clip_samples} samples) and a whole number of latent frames",
                    model.sample_size
                ),
            ));
        }
        Ok(())
    }
}

/// The audio-prompt conditioner's trainable projections (official
/// `conditioner.conditioners.audio_prompt.{proj_features_128,proj_out}`).
#[derive(Module, Debug)]
pub struct PromptProjections {
    /// Along time, `La -> Na`.
    pub proj_features_128: Linear,
    /// Per token, `C -> D`.
    pub proj_out: Linear,
}

/// Everything the teacher trains: the denoiser (DiT), the fusion block, the text encoder and
/// the conditioners' parameters (see the module docs for which of them a text-only request
/// uses).
#[derive(Module, Debug)]
pub struct TeacherModel {
    /// The diffusion transformer.
    pub dit: Dit,
    /// The MAF fusion block.
    pub maf: MafBlock,
    /// The T5 encoder.
    pub t5: T5Encoder,
    /// The video conditioner (CLIP included); only `empty_visual_feat` is trained.
    pub video: VideoConditioner,
    /// The audio-prompt projections.
    pub audio: PromptProjections,
}

/// Token ids `[B, Nt]` and attention mask `[B, Nt]` of a batch of captions.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// Token ids.
    pub ids: Tensor<2, Int>,
    /// Attention mask (float 0/1).
    pub mask: Tensor<2>,
}

/// The frozen prompt VAE's posterior for a silent audio prompt: mean and standard deviation,
/// `[C, La]` each.
#[derive(Debug, Clone)]
pub struct SilentPrompt {
    /// Posterior mean, `C x La` values.
    pub mean: Vec<f32>,
    /// Posterior standard deviation, `C x La` values.
    pub stdev: Vec<f32>,
    /// `[C, La]`.
    pub dims: [usize; 2],
}

impl SilentPrompt {
    /// The posterior of an all-zero prompt of `samples` samples through `encoder`, computed
    /// as the audio-prompt conditioner computes it.
    pub fn new(encoder: &OobleckEncoder, samples: usize, device: &Device) -> Self {
        let moments = encoder.forward_zeros(samples, device);
        let posterior = Posterior::from_encoder_output(moments);
        let [_, c, la] = posterior.mean.dims();
        let values = |t: Tensor<3>| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default()
        };
        SilentPrompt {
            stdev: values(posterior.stdev()),
            mean: values(posterior.mean),
            dims: [c, la],
        }
    }

    /// Prompt latents `[B, C, La]`: `mean + eps * stdev` for the given `eps` (`B x C x La`
    /// values), as the conditioner's posterior sample.
    pub fn latents(&self, eps: &[f32], device: &Device) -> TrainResult<Tensor<3>> {
        let n = self.mean.len();
        if n == 0 || !eps.len().is_multiple_of(n) {
            return Err(TrainError::config(
                "teacher",
                format!("{} prompt noise values for latents of {n}", eps.len()),
            ));
        }
        let values: Vec<f32> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| self.mean[i % n] + e * self.stdev[i % n])
            .collect();
        let [c, la] = self.dims;
        Ok(Tensor::from_data(
            TensorData::new(values, [eps.len() / n, c, la]),
            device,
        ))
    }
}

impl TeacherModel {
    /// Builds the model from the run's configuration (parameters lazy until initialised or
    /// loaded).
    pub fn init(run: &RunConfig, device: &Device) -> TrainResult<Self> {
        let model = run.model_config()?;
        let video: VideoConditionerConfig = model
            .video_conditioner()
            .ok_or_else(|| TrainError::config("model", "no video conditioner"))?
            .clone()
            .with_clip(run.teacher.clip_config()?);
        let audio = model
            .audio_conditioner()
            .ok_or_else(|| TrainError::config("model", "no audio_autoencoder conditioner"))?;
        let c = audio.latent_dim();
        Ok(TeacherModel {
            dit: model.dit().init(device)?,
            maf: model.maf().init(device),
            t5: run.teacher.t5_config()?.init(device),
            video: video.init(device),
            audio: PromptProjections {
                proj_features_128: LinearConfig::new(audio.latent_frames, audio.tokens)
                    .init(device),
                proj_out: LinearConfig::new(c, audio.cond_dim).init(device),
            },
        })
    }

    /// The teacher of checkpoint `step` of a run folder, on the plain (non-autodiff) `device`,
    /// for evaluation: the moving average of its weights where the checkpoint holds one
    /// ([`LoopSettings::ema_decay`](super::LoopSettings::ema_decay); what the stage exports)
    /// or the mean of the stage's checkpoints (the last checkpoint of a stage with
    /// [`LoopSettings::checkpoint_mean`](super::LoopSettings::checkpoint_mean)), the trained
    /// weights otherwise ([`TeacherModel::trained_from_checkpoint`]).
    pub fn from_checkpoint(run: &RunDir, step: u64, device: &Device) -> TrainResult<Self> {
        let checkpoints = Checkpoints::new(&run.stage_dir(StageName::Teacher));
        let fresh = TeacherModel::init(run.config(), &device.clone().autodiff())?;
        match checkpoints.load_average(step, fresh)? {
            Some(average) => Ok(average.valid()),
            None => Self::trained_from_checkpoint(run, step, device),
        }
    }

    /// The trained weights of checkpoint `step` of a run folder (never its moving average), on
    /// the plain (non-autodiff) `device`.
    pub fn trained_from_checkpoint(run: &RunDir, step: u64, device: &Device) -> TrainResult<Self> {
        let model = TeacherModel::init(run.config(), &device.clone().autodiff())?;
        Ok(Checkpoints::new(&run.stage_dir(StageName::Teacher))
            .load(step, model, burn::optim::AdamConfig::new().init())?
            .model
            .valid())
    }

    /// Text condition tokens `[B, Nt, D]`: the T5 encoder's output with padded positions
    /// zeroed (the text conditioner's computation).
    pub fn text_tokens(&self, text: &TextBatch) -> TrainResult<Tensor<3>> {
        Ok(self
            .t5
            .forward_masked(text.ids.clone(), text.mask.clone())?)
    }

    /// The fused context `[B, Nctx, D]` of a text-only request: text tokens, the video
    /// conditioner on all-zero frames and sync features (its empty feature), and prompt
    /// latents `[B, C, La]` (a silent prompt's posterior sample, [`SilentPrompt::latents`])
    /// through the audio projections, fused by the MAF block.
    pub fn context(&self, text: &TextBatch, prompt_latents: Tensor<3>) -> TrainResult<Tensor<3>> {
        let text = self.text_tokens(text)?;
        let device = text.device();
        let [b, ..] = text.dims();
        let frames = self.video.frames();
        let size = self.video.image_size();
        let channels = self.video.visual_encoder_model.channels();
        let zeros = Tensor::<5>::zeros([b, frames, channels, size, size], &device);
        let [_, _, d] = text.dims();
        let sync = Tensor::<3>::zeros([b, self.video.sync_rows(), d], &device);
        let video = self.video.forward(zeros, sync)?.tokens;
        let audio = self.prompt_tokens(prompt_latents);
        Ok(self.maf.forward(text, video, audio)?)
    }

    /// Audio-prompt tokens `[B, Na, D]` of prompt latents `[B, C, La]`: `proj_features_128`
    /// along time, then `proj_out` per token (what the MAF block receives).
    pub fn prompt_tokens(&self, prompt_latents: Tensor<3>) -> Tensor<3> {
        let features = self.audio.proj_features_128.forward(prompt_latents); // [B, C, Na]
        self.audio.proj_out.forward(features.swap_dims(1, 2)) // [B, Na, D]
    }

    /// [`TeacherModel::context`] from captions: tokenized with `tokenizer`, the prompt latents
    /// drawn from `silent` with `eps`.
    pub fn context_from_captions(
        &self,
        tokenizer: &T5Tokenizer,
        captions: &[&str],
        silent: &SilentPrompt,
        eps: &[f32],
        device: &Device,
    ) -> TrainResult<Tensor<3>> {
        self.context_with_prompt(tokenizer, captions, silent.latents(eps, device)?, device)
    }

    /// [`TeacherModel::context`] from captions tokenized with `tokenizer` and prompt latents
    /// `[B, C, La]` (e.g. [`masked_prompt`]'s).
    pub fn context_with_prompt(
        &self,
        tokenizer: &T5Tokenizer,
        captions: &[&str],
        prompt_latents: Tensor<3>,
        device: &Device,
    ) -> TrainResult<Tensor<3>> {
        let tokens = tokenizer.encode_batch(captions)?;
        let text = TextBatch {
            ids: tokens.ids_tensor(device),
            mask: tokens.mask_tensor(device),
        };
        self.context(&text, prompt_latents)
    }

    /// The velocity `[B, C, L]` the DiT predicts for noisy latents `z_t` `[B, C, L]` at times
    /// `t` `[B]` (1 = pure noise) with the fused context `[B, Nctx, D]` (all zeros: the null
    /// condition of classifier-free guidance).
    pub fn velocity(
        &self,
        z_t: Tensor<3>,
        t: Tensor<1>,
        context: Tensor<3>,
    ) -> TrainResult<Tensor<3>> {
        Ok(self.dit.forward_with_context(z_t, t, context)?)
    }
}

/// The demo tokenizer padded to the run's text length.
pub fn tokenizer(run: &RunConfig) -> TrainResult<T5Tokenizer> {
    let model = run.model_config()?;
    let text = model
        .text_conditioner()
        .ok_or_else(|| TrainError::config("model", "no t5 text conditioner"))?;
    Ok(T5Tokenizer::from_bytes(
        demo_tokenizer_json(run.teacher.text_fill, run.teacher.text_slots).as_bytes(),
        text.max_length,
    )?)
}

/// The VAE export of a run (`export/pretransform/vae.safetensors`), loaded on `device`.
pub fn load_trained_vae(run: &RunDir, device: &Device) -> TrainResult<Vae> {
    let path = super::vae::vae_export_path(run);
    if !path.exists() {
        return Err(TrainError::config(
            "teacher",
            format!(
                "the trained VAE {} does not exist: run the vae stage first",
                path.display()
            ),
        ));
    }
    let dict = StateDict::open(&path)?;
    let config = super::vae::vae_config(&run.config().model_config()?);
    Ok(Vae::load(&config, &[WeightSource::new(&dict)], device)?.0)
}

/// The device `device` wraps when it has autodiff (itself otherwise): where frozen modules
/// run.
pub fn inner_device(device: &Device) -> Device {
    Tensor::<1>::zeros([1], device).inner().device()
}

/// The teacher stage of a run.
pub struct TeacherStage {
    seed: u64,
    run: RunConfig,
    /// The run's folder (where a relative `teacher.init_from` is resolved).
    root: PathBuf,
    corpus: Corpus,
    tokenizer: T5Tokenizer,
    encoder: OobleckEncoder,
    silent: SilentPrompt,
    frozen_device: Device,
    latents: Mutex<CachedLatents>,
    latent_dims: [usize; 2],
    /// Seconds per latent frame (the timeline's frame length).
    frame_s: f32,
    /// The subspace the timeline targets are projected onto (`teacher.timeline.basis`).
    timeline_basis: Option<TimelineBasis>,
}

/// The clip latents computed so far, and which of them the run folder does not hold yet.
struct CachedLatents {
    by_clip: HashMap<u64, Vec<f32>>,
    unsaved: Vec<u64>,
    store: LatentStore,
}

impl TeacherStage {
    /// The stage of `run`: needs the run's finished VAE stage (its export is the frozen VAE).
    pub fn new(run: &RunDir, device: &Device) -> TrainResult<Self> {
        let config = run.config().clone();
        config.validate()?;
        if super::vae::vae_ready(run)?.is_none() {
            let vae_steps = Checkpoints::new(&run.stage_dir(StageName::Vae))
                .newest()?
                .unwrap_or(0);
            let how = match config.base() {
                Some(_) => "train the base run first, whose VAE this run imports (--stage base)",
                None => "finish it first (--stage vae) or import a trained VAE (--import-vae)",
            };
            return Err(TrainError::config(
                "teacher",
                format!(
                    "the vae stage is at step {vae_steps} of {}: {how}",
                    config.vae.optim.steps
                ),
            ));
        }
        let frozen_device = inner_device(device);
        let vae = load_trained_vae(run, &frozen_device)?;
        let model = config.model_config()?;
        let silent = SilentPrompt::new(&vae.encoder, model.prompt_samples(), &frozen_device);
        let vae_path = super::vae::vae_export_path(run);
        let vae_bytes = std::fs::read(&vae_path).map_err(|e| TrainError::io(&vae_path, e))?;
        let latent_dims = [model.model.io_channels, model.latent_length()];
        let frame_s = model.sample_size as f32
            / model.sample_rate as f32
            / model.latent_length().max(1) as f32;
        let timeline_basis = match config
            .teacher
            .timeline
            .as_ref()
            .and_then(|t| t.basis.as_ref())
        {
            Some(path) => {
                let basis = TimelineBasis::read(&run.root().join(path))?;
                if basis.frames() != model.latent_length() {
                    return Err(TrainError::config(
                        "teacher.timeline.basis",
                        format!(
                            "{} frames, the model has {} latent frames",
                            basis.frames(),
                            model.latent_length()
                        ),
                    ));
                }
                Some(basis)
            }
            None => None,
        };
        let (store, by_clip) = LatentStore::open(
            &run.stage_dir(StageName::Teacher).join("latents"),
            LatentKey {
                vae_sha256: super::checkpoint::sha256(&vae_bytes),
                corpus: config.corpus.clone(),
                corpus_version: crate::corpus::CORPUS_VERSION,
                samples: model.sample_size,
                latent: latent_dims,
            },
        )?;
        // The source is read only by a teacher that has not started: a trained run (its
        // student, its export) needs no source, which may have moved since.
        let started = !Checkpoints::new(&run.stage_dir(StageName::Teacher))
            .steps()?
            .is_empty();
        if let Some(init) = config.teacher.init_from.as_ref().filter(|_| !started) {
            let source = source_root(init, run.root());
            blocks_to_add(&RunConfig::from_file(source.join("run.json"))?, &config)?;
        }
        Ok(TeacherStage {
            seed: config.seed,
            root: run.root().to_path_buf(),
            corpus: Corpus::new((&config.corpus).into())?,
            tokenizer: tokenizer(&config)?,
            encoder: vae.encoder,
            silent,
            frozen_device,
            latents: Mutex::new(CachedLatents {
                by_clip,
                unsaved: Vec::new(),
                store,
            }),
            latent_dims,
            frame_s,
            timeline_basis,
            run: config,
        })
    }

    /// The demo tokenizer at the run's text length.
    pub fn tokenizer(&self) -> &T5Tokenizer {
        &self.tokenizer
    }

    /// The silent audio prompt's posterior.
    pub fn silent_prompt(&self) -> &SilentPrompt {
        &self.silent
    }

    /// The random stream of step `step`.
    fn rng(&self, step: u64) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&StageName::Teacher.stream().to_le_bytes());
        seed[16..24].copy_from_slice(&step.to_le_bytes());
        ChaCha8Rng::from_seed(seed)
    }

    /// Clean latents `[B, C, L]` (posterior means of the frozen VAE) of training clips
    /// `indices`, and their captions. Encodes the clips not cached yet, in one batch.
    pub fn clean_latents(
        &self,
        indices: &[u64],
        device: &Device,
    ) -> TrainResult<(Tensor<3>, Vec<String>)> {
        let (latents, clips) = self.clips_and_latents(indices, device)?;
        Ok((latents, clips.into_iter().map(|c| c.caption).collect()))
    }

    /// The timeline targets `[B, frames, CHANNELS]` of `clips` (projected onto the run's
    /// basis where it has one), for the timeline term and the layout oracle.
    fn timeline_targets(&self, clips: &[Clip], frames: usize, device: &Device) -> Tensor<3> {
        let events: Vec<&[RenderedEvent]> = clips.iter().map(|c| c.events.as_slice()).collect();
        timeline_batch_projected(
            &events,
            frames,
            self.frame_s,
            self.timeline_basis.as_ref(),
            device,
        )
    }

    /// A layout pretraining step on scenes drawn from the first
    /// [`TimelineLoss::pretrain_scenes`] training scenes (not the clip pool): the timeline term
    /// of their captions with the silent audio prompt. Draws, in order from the step's stream:
    /// the scene of each row, then the prompt noise.
    fn layout_loss_on_drawn_scenes(
        &self,
        model: &TeacherModel,
        step: u64,
        setting: &TimelineLoss,
        device: &Device,
    ) -> TrainResult<StepLoss> {
        let mut rng = self.rng(step);
        let b = self.run.teacher.optim.batch;
        let clips: Vec<Clip> = (0..b)
            .map(|_| {
                self.corpus
                    .training_clip(rng.next_u64() % setting.pretrain_scenes)
            })
            .collect();
        let eps = normals(&mut rng, b * self.silent.mean.len());
        let prompt = self.silent.latents(&eps, device)?;
        let [.., frames] = prompt.dims();
        let captions: Vec<&str> = clips.iter().map(|c| c.caption.as_str()).collect();
        let context = model.context_with_prompt(&self.tokenizer, &captions, prompt, device)?;
        self.layout_pretraining_loss(model, context, &clips, frames, setting)
    }

    /// The loss of a layout pretraining step: the weighted timeline term of the fused
    /// `context` against the clips' timelines (`frames` latent frames), without the DiT's
    /// blocks; logged as the `timeline` term and a `pretrain` marker.
    fn layout_pretraining_loss(
        &self,
        model: &TeacherModel,
        context: Tensor<3>,
        clips: &[Clip],
        frames: usize,
        setting: &TimelineLoss,
    ) -> TrainResult<StepLoss> {
        let device = context.device();
        let targets = self.timeline_targets(clips, frames, &device);
        let sequence = model.dit.conditioning_sequence(context)?;
        let term = timeline_loss(sequence, targets)?;
        let terms = BTreeMap::from([
            (
                "timeline".to_string(),
                term.clone().into_scalar::<f32>() as f64,
            ),
            ("pretrain".to_string(), 1.0),
        ]);
        Ok(StepLoss {
            loss: term.mul_scalar(setting.weight),
            terms,
        })
    }

    /// [`TeacherStage::clean_latents`] with the rendered clips themselves (their events).
    fn clips_and_latents(
        &self,
        indices: &[u64],
        device: &Device,
    ) -> TrainResult<(Tensor<3>, Vec<Clip>)> {
        let clips: Vec<Clip> = indices
            .iter()
            .map(|&i| self.corpus.training_clip(i))
            .collect();
        let mut guard = self
            .latents
            .lock()
            .map_err(|_| TrainError::config("teacher", "the latent cache was poisoned"))?;
        let CachedLatents {
            by_clip: cache,
            unsaved,
            ..
        } = &mut *guard;
        let mut missing: Vec<usize> = Vec::new();
        for (j, i) in indices.iter().enumerate() {
            if !cache.contains_key(i) && !missing.iter().any(|&m| indices[m] == *i) {
                missing.push(j);
            }
        }
        if !missing.is_empty() {
            let channels = self.encoder.channels_in();
            let samples = self.run.model_config()?.sample_size;
            let mut audio = Vec::with_capacity(missing.len() * channels * samples);
            for &j in &missing {
                let s = &clips[j].samples;
                for _ in 0..channels {
                    audio.extend(s.iter().take(samples));
                    audio.extend(std::iter::repeat_n(0.0, samples.saturating_sub(s.len())));
                }
            }
            let x = Tensor::<3>::from_data(
                TensorData::new(audio, [missing.len(), channels, samples]),
                &self.frozen_device,
            );
            let mean = Posterior::from_encoder_output(self.encoder.forward(x)).mean;
            let per = self.latent_dims[0] * self.latent_dims[1];
            let values = mean
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| TrainError::config("teacher", format!("{e:?}")))?;
            for (k, &j) in missing.iter().enumerate() {
                cache.insert(indices[j], values[k * per..(k + 1) * per].to_vec());
                unsaved.push(indices[j]);
            }
        }
        let mut values =
            Vec::with_capacity(indices.len() * self.latent_dims[0] * self.latent_dims[1]);
        for i in indices {
            values.extend_from_slice(&cache[i]);
        }
        let [c, l] = self.latent_dims;
        Ok((
            Tensor::from_data(TensorData::new(values, [indices.len(), c, l]), device),
            clips,
        ))
    }

    /// Encodes every clip of the training pool (the first `clip_pool` clips of the training
    /// stream) whose latent the stage does not hold yet, `batch` clips at a time, and writes
    /// them to the run folder every `persist_every` clips and at the end; `progress` gets (clips
    /// held, pool size) after each batch. Returns how many clips were encoded.
    ///
    /// Run as `audiox-train --out RUN --encode-latents` before the teacher stage (or in a second
    /// process while it is paused or running: chunks never replace each other, and a resumed
    /// teacher reads all of them), so that the teacher's first few hundred steps do not each
    /// wait for 16 encodings.
    pub fn encode_pool(
        &self,
        batch: usize,
        persist_every: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> TrainResult<usize> {
        let pool = self.run.teacher.clip_pool;
        let missing: Vec<u64> = {
            let guard = self
                .latents
                .lock()
                .map_err(|_| TrainError::config("teacher", "the latent cache was poisoned"))?;
            (0..pool)
                .filter(|i| !guard.by_clip.contains_key(i))
                .collect()
        };
        let mut since_persist = 0;
        for indices in missing.chunks(batch.max(1)) {
            self.clean_latents(indices, &self.frozen_device)?;
            since_persist += indices.len();
            if since_persist >= persist_every {
                self.persist_latents()?;
                since_persist = 0;
            }
            progress(self.cached_latents(), pool as usize);
        }
        self.persist_latents()?;
        Ok(missing.len())
    }

    /// How many clip latents this stage holds (read from the run folder or computed).
    pub fn cached_latents(&self) -> usize {
        self.latents.lock().map_or(0, |c| c.by_clip.len())
    }

    /// Writes the latents computed since the last call to the run folder (one chunk file of
    /// [`super::latent_store`]); returns the file, or `None` when there was nothing new.
    /// The trainer calls it after each checkpoint.
    pub fn persist_latents(&self) -> TrainResult<Option<PathBuf>> {
        let mut guard = self
            .latents
            .lock()
            .map_err(|_| TrainError::config("teacher", "the latent cache was poisoned"))?;
        let CachedLatents {
            by_clip,
            unsaved,
            store,
        } = &mut *guard;
        let entries: Vec<(u64, &[f32])> = unsaved
            .iter()
            .filter_map(|i| by_clip.get(i).map(|v| (*i, v.as_slice())))
            .collect();
        let written = store.append(&entries)?;
        unsaved.clear();
        Ok(written)
    }
}

impl Stage for TeacherStage {
    type Model = TeacherModel;

    /// Writes the clip latents computed since the last checkpoint to the run folder.
    fn checkpointed(&self, _step: u64) -> TrainResult<()> {
        self.persist_latents().map(|_| ())
    }

    fn name(&self) -> StageName {
        StageName::Teacher
    }

    fn settings(&self) -> &LoopSettings {
        &self.run.teacher.optim
    }

    /// After layout pretraining the flow steps warm up again over `warmup` steps (the DiT's
    /// blocks start there, and their first gradients would otherwise reach the pretrained
    /// text side at the full rate).
    fn lr_at(&self, step: u64) -> f64 {
        let optim = self.settings();
        let lr = optim.lr_at(step);
        match self.run.teacher.timeline.as_ref().map(|t| t.pretrain_steps) {
            Some(pretrain) if pretrain > 0 && step >= pretrain && optim.warmup > 0 => {
                let ramp = (step - pretrain + 1) as f64 / optim.warmup as f64;
                lr * ramp.min(1.0)
            }
            _ => lr,
        }
    }

    fn init_model(&self, device: &Device) -> TrainResult<TeacherModel> {
        let seed = self.seed ^ (StageName::Teacher.stream() << 56);
        Ok(random_init(TeacherModel::init(&self.run, device)?, seed))
    }

    /// The source run's teacher, grown to this run's depth, where `teacher.init_from` is set
    /// ([`super::grow`]); the seeded random teacher otherwise.
    fn initial_model(&self, device: &Device) -> TrainResult<TeacherModel> {
        let fresh = self.init_model(device)?;
        match &self.run.teacher.init_from {
            Some(init) => grown_teacher(init, &self.root, &self.run, fresh, device),
            None => Ok(fresh),
        }
    }

    /// Draws, in order from the step's stream: the clip of each row, the prompt noise, the
    /// prompt masks (only with [`TeacherStageConfig::audio_prompt`], so runs without it draw as
    /// before), then the flow batch (times, noise, dropped rows). Layout pretraining steps on
    /// drawn scenes ([`TimelineLoss::pretrain_scenes`]) draw their own way instead.
    fn loss(&self, model: &TeacherModel, step: u64, device: &Device) -> TrainResult<StepLoss> {
        let settings = &self.run.teacher;
        if let Some(setting) = settings
            .timeline
            .as_ref()
            .filter(|t| step < t.pretrain_steps && t.pretrain_scenes > 0)
        {
            return self.layout_loss_on_drawn_scenes(model, step, setting, device);
        }
        let mut rng = self.rng(step);
        let b = settings.optim.batch;
        let indices: Vec<u64> = (0..b)
            .map(|_| rng.next_u64() % settings.clip_pool)
            .collect();
        let (x0, clips) = self.clips_and_latents(&indices, device)?;
        // The clean latents' RMS, for the log: the flow's noise has unit variance, so latents
        // far from unit scale skew its signal-to-noise schedule (the schema has no latent
        // scaling to correct it).
        let rms = x0.clone().powi_scalar(2).mean().sqrt().into_scalar::<f32>() as f64;
        let eps = normals(&mut rng, b * self.silent.mean.len());
        let mut prompt = self.silent.latents(&eps, device)?;
        if let Some(masking) = &settings.audio_prompt {
            let [.., frames] = x0.dims();
            let blanks = masking.draw(&mut rng, b, frames);
            prompt = masked_prompt(prompt, x0.clone(), &blanks)?;
        }
        let captions: Vec<&str> = clips.iter().map(|c| c.caption.as_str()).collect();
        let context = model.context_with_prompt(&self.tokenizer, &captions, prompt, device)?;
        // Layout pretraining: the timeline term alone, without the DiT's blocks.
        if let Some(setting) = settings
            .timeline
            .as_ref()
            .filter(|t| step < t.pretrain_steps)
        {
            let [.., frames] = x0.dims();
            let mut loss = self.layout_pretraining_loss(model, context, &clips, frames, setting)?;
            loss.terms.insert("x0_rms".to_string(), rms);
            return Ok(loss);
        }
        // The timeline term (no random draw, so the stream is the same with or without it).
        let mut oracle = None;
        let timeline = match &settings.timeline {
            Some(setting) => {
                let [.., frames] = x0.dims();
                let targets = self.timeline_targets(&clips, frames, device);
                let sequence = model.dit.conditioning_sequence(context.clone())?;
                if setting.oracle {
                    oracle = Some(targets.clone());
                }
                Some((timeline_loss(sequence, targets)?, setting.weight))
            }
            None => None,
        };
        let mut loss = match oracle {
            None => flow_loss(
                &model.dit,
                x0,
                context,
                settings.time_sampler,
                settings.cond_dropout,
                &mut rng,
            )?,
            // The diagnostic: the exact layout written into the kept rows' conditioning.
            Some(targets) => flow_loss_conditioned(
                &model.dit,
                x0,
                settings.time_sampler,
                settings.cond_dropout,
                &mut rng,
                |dropped| {
                    let sequence = model
                        .dit
                        .conditioning_sequence(drop_condition(context, dropped))?;
                    let kept: Vec<bool> = dropped.iter().map(|d| !d).collect();
                    Ok(model
                        .dit
                        .prepare_sequence(with_oracle(sequence, targets, &kept)?)?)
                },
            )?,
        };
        loss.terms.insert("x0_rms".to_string(), rms);
        if let Some((term, weight)) = timeline {
            let value = term.clone().into_scalar::<f32>() as f64;
            loss.terms.insert("timeline".to_string(), value);
            loss.loss = loss.loss + term.mul_scalar(weight);
        }
        Ok(loss)
    }
}

/// Prompt latents `[B, C, L]`: row `i` is `clip`'s row outside `blanks[i]` and `silent`'s
/// inside it (`None`: the whole row silent). `silent` and `clip` must have one shape, and
/// `blanks` one entry per row with spans inside the frames.
pub fn masked_prompt(
    silent: Tensor<3>,
    clip: Tensor<3>,
    blanks: &[Option<Range<usize>>],
) -> TrainResult<Tensor<3>> {
    let [b, _, frames] = silent.dims();
    if clip.dims() != silent.dims() || blanks.len() != b {
        return Err(TrainError::config(
            "teacher.audio_prompt",
            format!(
                "prompt latents {:?}, clip latents {:?} and {} blank spans do not match",
                silent.dims(),
                clip.dims(),
                blanks.len()
            ),
        ));
    }
    let mut keep = vec![0.0f32; b * frames];
    for (row, blank) in blanks.iter().enumerate() {
        let Some(blank) = blank else { continue };
        if blank.start > blank.end || blank.end > frames {
            return Err(TrainError::config(
                "teacher.audio_prompt",
                format!("blank span {blank:?} outside {frames} frames"),
            ));
        }
        for (f, k) in keep[row * frames..(row + 1) * frames]
            .iter_mut()
            .enumerate()
        {
            *k = if blank.contains(&f) { 0.0 } else { 1.0 };
        }
    }
    let keep = Tensor::<3>::from_data(TensorData::new(keep, [b, 1, frames]), &silent.device());
    let blank = keep.clone().neg().add_scalar(1.0);
    Ok(silent * blank + clip * keep)
}

/// What [`export_teacher`] wrote.
#[derive(Debug, Clone)]
pub struct TeacherExport {
    /// The folder (`AudioX::builder().checkpoint_dir(...)` loads it).
    pub dir: PathBuf,
    /// The teacher checkpoint (`pretrained_ckpt/pretrained_ckpt.safetensors`).
    pub teacher: PathBuf,
    /// Float parameters written, per file.
    pub parameters: BTreeMap<String, usize>,
}

/// Writes the trained teacher and everything else a model folder needs to `out` (the run's
/// `export/`, which already holds the VAE):
///
/// * `pretrained_ckpt/pretrained_ckpt.safetensors`: DiT, MAF block, the video conditioner
///   without its CLIP tower, the audio-prompt projections, under the official names (the
///   teacher slot; the builder needs no student when a teacher is there, so none is written
///   until the DMD student exists);
/// * `t5-base/`: `config.json`, `tokenizer.json` (the demo vocabulary), `model.safetensors`;
/// * `clip-vit-base-patch32/`: `config.json`, `model.safetensors` (seeded, never trained);
/// * `config.json`: the run's model config.
///
/// No Synchformer is written: without it the model refuses video and image requests, which
/// the demo model does not follow. All files are f32 (`audiox convert` or the shipping step
/// stores them in bf16). The VAE (`pretransform/vae.safetensors`) must be there already.
pub fn export_teacher(
    model: &TeacherModel,
    run: &RunConfig,
    out: &Path,
) -> TrainResult<TeacherExport> {
    if !out.join("pretransform").join("vae.safetensors").exists() {
        return Err(TrainError::config(
            "export",
            format!("{} has no pretransform/vae.safetensors", out.display()),
        ));
    }
    let meta = [("format", "pt"), ("audiox_precision", "f32")];
    let mut parameters = BTreeMap::new();
    let (tensors, clip) = denoiser_tensors(model)?;
    let teacher = out
        .join("pretrained_ckpt")
        .join("pretrained_ckpt.safetensors");
    parameters.insert("teacher".into(), count(&tensors));
    write_safetensors(&teacher, &tensors, &meta)?;

    let t5_dir = out.join("t5-base");
    let t5 = official_tensors_of(&model.t5, &T5Encoder::layout(), "")?;
    parameters.insert("t5".into(), count(&t5));
    write_safetensors(&t5_dir.join("model.safetensors"), &t5, &meta)?;
    write_json(&t5_dir.join("config.json"), &run.teacher.t5)?;
    write_atomic(
        &t5_dir.join("tokenizer.json"),
        demo_tokenizer_json(run.teacher.text_fill, run.teacher.text_slots).as_bytes(),
    )?;

    let clip_dir = out.join("clip-vit-base-patch32");
    parameters.insert("clip".into(), count(&clip));
    write_safetensors(&clip_dir.join("model.safetensors"), &clip, &meta)?;
    write_json(&clip_dir.join("config.json"), &run.teacher.clip)?;

    write_json(&out.join("config.json"), &run.model)?;
    Ok(TeacherExport {
        dir: out.to_path_buf(),
        teacher,
        parameters,
    })
}

/// Writes the DMD student into the model folder `out` that [`export_teacher`] wrote:
/// `audiox_turbo/audiox_turbo.safetensors` (the student slot), holding the student's DiT and
/// the teacher's MAF block, video conditioner and audio-prompt projections (the student is
/// distilled on the teacher's context, so its conditioning path is the teacher's). The T5
/// and CLIP folders, the VAE and `config.json` are shared with the teacher. Returns the file.
pub fn export_student(teacher: &TeacherModel, student: &Dit, out: &Path) -> TrainResult<PathBuf> {
    if !out
        .join("pretrained_ckpt")
        .join("pretrained_ckpt.safetensors")
        .exists()
    {
        return Err(TrainError::config(
            "export",
            format!(
                "{} has no teacher export (pretrained_ckpt/pretrained_ckpt.safetensors)",
                out.display()
            ),
        ));
    }
    let meta = [("format", "pt"), ("audiox_precision", "f32")];
    let mut tensors = official_tensors_of(student, &Dit::layout(), prefixes::DIT)?;
    let (rest, _) = denoiser_tensors(teacher)?;
    tensors.extend(
        rest.into_iter()
            .filter(|(name, _, _)| !name.starts_with(prefixes::DIT)),
    );
    let file = out.join("audiox_turbo").join("audiox_turbo.safetensors");
    write_safetensors(&file, &tensors, &meta)?;
    Ok(file)
}

/// The DiT of an exported student file (as [`export_student`] writes it, or the shipped demo
/// model's `audiox_turbo/audiox_turbo.safetensors`, f32 or bf16) loaded into a copy of
/// `template` (the same architecture: a tensor of another shape, or a missing one, is an error
/// naming it). The inverse of [`export_student`] for the student: its weights come back bit for
/// bit from an f32 file.
pub fn load_exported_student(template: &Dit, file: &Path) -> TrainResult<Dit> {
    let dict = StateDict::open(file)?;
    let (dit, _) = audiox_core::weights::load_module(
        template.clone(),
        &Dit::layout(),
        &[WeightSource::with_prefix(&dict, prefixes::DIT)],
    )
    .map_err(|e| TrainError::checkpoint(file, e.to_string()))?;
    Ok(dit)
}

/// The denoiser checkpoint's tensors of `model` under their official names (DiT, MAF block,
/// video conditioner without its CLIP tower, audio-prompt projections), and the CLIP tower's
/// tensors under the Hugging Face names.
fn denoiser_tensors(
    model: &TeacherModel,
) -> TrainResult<(Vec<super::vae::NamedTensor>, Vec<super::vae::NamedTensor>)> {
    let mut tensors = official_tensors_of(&model.dit, &Dit::layout(), prefixes::DIT)?;
    tensors.extend(official_tensors_of(
        &model.maf,
        &MafBlock::layout(),
        prefixes::MAF,
    )?);
    let video = official_tensors_of(&model.video, &VideoConditioner::layout(), "")?;
    let (clip, video): (Vec<_>, Vec<_>) = video
        .into_iter()
        .partition(|(name, _, _)| name.starts_with(prefixes::CLIP_IN_VIDEO));
    tensors.extend(
        video
            .into_iter()
            .map(|(n, s, v)| (format!("{}{n}", prefixes::VIDEO), s, v)),
    );
    tensors.extend(official_tensors_of(
        &model.audio,
        &Layout::new(),
        prefixes::AUDIO,
    )?);
    let clip = clip
        .into_iter()
        .map(|(n, s, v)| (n[prefixes::CLIP_IN_VIDEO.len()..].to_string(), s, v))
        .collect();
    Ok((tensors, clip))
}

/// The teacher's text side as the DMD stage's prompts ([`super::dmd::Prompts`]): captions to
/// the post-MAF context of a text-only request, through the trained teacher's T5, conditioners
/// and MAF block, detached (the student is distilled on the teacher's context and does not
/// train it). The silent audio prompt enters as its posterior mean (its posterior standard
/// deviation is ~1e-3 of the mean's scale for the demo VAE).
pub struct TeacherPrompts {
    model: TeacherModel,
    tokenizer: T5Tokenizer,
    silent: SilentPrompt,
    clip_prompts: Option<ClipPrompts>,
}

/// Masked audio prompts made from the training clips (see [`TeacherPrompts::with_clip_prompts`]).
struct ClipPrompts {
    masking: PromptMasking,
    stage: Arc<TeacherStage>,
    seed: u64,
}

/// The stream the student stage's prompt masks are drawn from (per clip), apart from the
/// stages' step streams.
const CLIP_PROMPT_STREAM: u64 = 0x5052_4f4d_5054; // "PROMPT"

impl TeacherPrompts {
    /// Prompts computed by `model` with `tokenizer` and the silent prompt `silent` (both from
    /// the teacher stage: [`TeacherStage::tokenizer`], [`TeacherStage::silent_prompt`]).
    ///
    /// The model is frozen here (no parameter requires a gradient). The contexts are detached
    /// anyway, but a forward pass over parameters that require gradients records an autodiff
    /// graph that no backward pass consumes, and burn kept every such graph: the student
    /// stage's memory grew by about 36 MB per step (8 GB by step 190 of run S9, and steps ran
    /// 3-7 times slower) until this froze the model.
    pub fn new(model: TeacherModel, tokenizer: T5Tokenizer, silent: SilentPrompt) -> Self {
        TeacherPrompts {
            model: model.no_grad(),
            tokenizer,
            silent,
            clip_prompts: None,
        }
    }

    /// Gives the student stage's rows masked audio prompts made from their training clips, as
    /// the teacher trained with ([`PromptMasking`], in latent space: [`masked_prompt`]), so
    /// that the student keeps following audio prompts: `stage` provides the clips' latents
    /// ([`TeacherStage::clean_latents`]), and each clip's mask is drawn from a stream of
    /// `(seed, clip)`, so a resumed run draws the same. Both prompts enter as posterior means.
    /// The regression term's contexts keep the silent prompt (the cached teacher pairs were
    /// computed with it).
    pub fn with_clip_prompts(
        mut self,
        masking: PromptMasking,
        stage: Arc<TeacherStage>,
        seed: u64,
    ) -> TrainResult<Self> {
        masking.check("student.audio_prompt")?;
        self.clip_prompts = Some(ClipPrompts {
            masking,
            stage,
            seed,
        });
        Ok(self)
    }

    /// The (frozen) model the contexts are computed with.
    pub fn model(&self) -> &TeacherModel {
        &self.model
    }
}

impl super::dmd::Prompts<Tensor<3>> for TeacherPrompts {
    fn context(&self, captions: &[String], device: &Device) -> TrainResult<Tensor<3>> {
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        let eps = vec![0.0; captions.len() * self.silent.mean.len()];
        Ok(self
            .model
            .context_from_captions(&self.tokenizer, &refs, &self.silent, &eps, device)?
            .detach())
    }

    fn clip_context(
        &self,
        clips: &[u64],
        captions: &[String],
        device: &Device,
    ) -> TrainResult<Tensor<3>> {
        let Some(p) = &self.clip_prompts else {
            return self.context(captions, device);
        };
        let (x0, _) = p.stage.clean_latents(clips, device)?;
        let [.., frames] = x0.dims();
        let blanks: Vec<Option<Range<usize>>> = clips
            .iter()
            .map(|&clip| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&p.seed.to_le_bytes());
                seed[8..16].copy_from_slice(&CLIP_PROMPT_STREAM.to_le_bytes());
                seed[16..24].copy_from_slice(&clip.to_le_bytes());
                p.masking
                    .draw(&mut ChaCha8Rng::from_seed(seed), 1, frames)
                    .remove(0)
            })
            .collect();
        let eps = vec![0.0; clips.len() * self.silent.mean.len()];
        let prompt = masked_prompt(self.silent.latents(&eps, device)?, x0, &blanks)?;
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        Ok(self
            .model
            .context_with_prompt(&self.tokenizer, &refs, prompt, device)?
            .detach())
    }
}

fn count(tensors: &[super::vae::NamedTensor]) -> usize {
    tensors.iter().map(|(_, _, v)| v.len()).sum()
}

fn write_json(path: &Path, value: &serde_json::Value) -> TrainResult<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TrainError::config(path.display().to_string(), e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// `n` standard normal values from a fresh stream seeded by `seed` (for tests and examples
/// that need prompt noise outside a training step).
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    normals(&mut ChaCha8Rng::seed_from_u64(seed), n)
}

/// The critic's real clips (`student.critic`): the training clips' clean latents, encoded by
/// the run's VAE and cached as the teacher's are ([`TeacherStage::clean_latents`]).
impl super::critic::RealLatents for TeacherStage {
    fn real_latents(&self, clips: &[u64], device: &Device) -> TrainResult<Tensor<3>> {
        Ok(self.clean_latents(clips, device)?.0)
    }
}
