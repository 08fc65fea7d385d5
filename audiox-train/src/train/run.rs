//! The run configuration and the run directory.
//!
//! A run directory holds `run.json` (the [`RunConfig`], written when the run starts) and one
//! folder per stage (`vae/`, ...) with that stage's checkpoints and loss log. Starting again on
//! the same directory resumes it; a different configuration is refused
//! ([`TrainError::ConfigMismatch`]), so a resumed run is always the run that was started.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{TrainError, TrainResult};
use super::flow::TimeSampler;
pub use super::teacher::TeacherStageConfig;
use crate::corpus::CorpusConfig;

/// The official-schema model configuration of the embedded demo model, the shipped one's
/// (16 kHz stereo, Oobleck VAE with 16 base channels, strides 2/4/4/10 and 16 latent channels;
/// condition width 64; 96 text tokens, 480 audio-prompt tokens; DiT width 96, depth 4, 4 heads
/// of 24); sizes per component in `docs/training.md`.
pub const DEMO_MODEL_CONFIG: &str = include_str!("../../assets/demo_config.json");

/// Slot tokens before the caption in the demo run ([`TeacherStageConfig::text_slots`]): with
/// the longest caption's 11 pieces and `</s>` they fit the demo config's 96 text tokens.
pub const DEMO_TEXT_SLOTS: usize = 80;

/// The demo T5's Hugging Face config (`assets/demo_t5/config.json`) with room in its token
/// table for `slots` slot tokens after the tokenizer's pieces.
fn demo_t5_config(slots: usize) -> serde_json::Value {
    let mut t5: serde_json::Value = serde_json::from_str(crate::tokenizer::DEMO_T5_CONFIG_JSON)
        .expect("the built-in T5 config is JSON");
    let pieces = t5["vocab_size"]
        .as_u64()
        .expect("the built-in T5 config has a vocab_size");
    t5["vocab_size"] = serde_json::json!(pieces + slots as u64);
    t5
}

/// The corpus part of a [`RunConfig`] (see [`CorpusConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSettings {
    /// Samples per second; must equal the model's `sample_rate`.
    pub sample_rate: u32,
    /// Clip length in seconds.
    pub duration_s: f32,
    /// The corpus seed.
    pub seed: u64,
    /// One caption in this many is held out.
    pub held_out_every: u64,
    /// The share of the layout's random timing range used (see
    /// [`CorpusConfig::timing_jitter`]); 1 (the whole range) when absent, and then not written,
    /// so the configurations of runs made before the field existed read and compare unchanged.
    #[serde(default = "full_jitter", skip_serializing_if = "is_full_jitter")]
    pub timing_jitter: f32,
}

fn full_jitter() -> f32 {
    1.0
}

fn is_full_jitter(v: &f32) -> bool {
    *v == 1.0
}

impl From<&CorpusSettings> for CorpusConfig {
    fn from(s: &CorpusSettings) -> Self {
        CorpusConfig {
            sample_rate: s.sample_rate,
            duration_s: s.duration_s,
            seed: s.seed,
            held_out_every: s.held_out_every,
            timing_jitter: s.timing_jitter,
        }
    }
}

/// Settings shared by every stage's optimisation loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSettings {
    /// Optimiser steps in all.
    pub steps: u64,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate (Adam).
    pub lr: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup: u64,
    /// A checkpoint every this many steps (and at the last step).
    pub checkpoint_every: u64,
    /// How many of the newest checkpoints are kept (at least 1).
    pub keep_checkpoints: usize,
    /// Clip each parameter's gradient to at most this L2 norm before the Adam update
    /// (burn's `GradientClippingConfig::Norm`, applied per parameter tensor). `None`: no
    /// clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f32>,
    /// Adam's `(beta1, beta2)`. `None`: burn's defaults, (0.9, 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_betas: Option<(f32, f32)>,
    /// A linear decay of the learning rate over the stage's last steps. `None`: constant
    /// after the warm-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay: Option<LrDecay>,
    /// Keep an exponential moving average of the weights with this decay per step (e.g.
    /// 0.998: a time constant of 500 steps), saved in every checkpoint (`average.bpk`) and
    /// used for the stage's export and by the stages after it. It starts from the weights the
    /// first step of the call starts from (a checkpoint without an average, e.g. one written
    /// before the setting was added, starts it there). `None`: no average; the trained
    /// weights are exported. Stages with their own loop (the DMD student stage) refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Export the parameter-by-parameter mean of the stage's checkpoints from a step on
    /// (stochastic weight averaging over the stage's last stretch; see [`CheckpointMean`])
    /// instead of the last trained weights. `None`: no mean. Not with `ema_decay`; stages with
    /// their own loop (the DMD student stage) refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_mean: Option<CheckpointMean>,
}

/// The mean of a stage's checkpoints ([`LoopSettings::checkpoint_mean`]): the checkpoints of
/// steps `from_step`, `from_step + checkpoint_every`, ... and the stage's last step. Those
/// checkpoints are never deleted by `keep_checkpoints` (an interrupted run's extra checkpoints
/// do not push them out). When the stage's last step is done, their trained weights are
/// averaged and saved with the last checkpoint as its `average.bpk`, which the stage's export
/// and the stages after it use (as for a moving average). The demo teacher's mean of fifteen
/// checkpoints counts about ten points more of the held-out captions than its last checkpoint
/// (`docs/training.md`, session of 2026-12-04 morning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMean {
    /// The first checkpoint in the mean: a multiple of `checkpoint_every`, below `steps`.
    pub from_step: u64,
}

/// A linear decay of the learning rate at the end of a stage ([`LoopSettings::lr_decay`]):
/// `lr` up to `from_step`, then falling linearly to `final_lr` at the last step. Continuing a
/// stage with a constant rate from a checkpoint and a decaying one from there on is a new
/// schedule from that step: set `from_step` to the checkpoint's step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrDecay {
    /// The first step (0-based) whose rate is below `lr`'s line (the rate of step
    /// `from_step` is still `lr`).
    pub from_step: u64,
    /// The rate of the last step (at least 0, at most `lr`).
    pub final_lr: f64,
}

impl LoopSettings {
    /// The steps whose checkpoints [`LoopSettings::checkpoint_mean`] averages, in order (empty
    /// without one): `from_step`, every `checkpoint_every` after it below `steps`, and
    /// `steps`.
    pub fn mean_steps(&self) -> Vec<u64> {
        let Some(mean) = self.checkpoint_mean else {
            return Vec::new();
        };
        let every = self.checkpoint_every.max(1);
        let mut steps: Vec<u64> = (mean.from_step..self.steps)
            .step_by(every as usize)
            .collect();
        steps.push(self.steps);
        steps
    }

    /// The learning rate of step `step` (0-based): linear warm-up, then constant, then the
    /// linear [`LrDecay`] if any.
    pub fn lr_at(&self, step: u64) -> f64 {
        let base = if self.warmup == 0 || step >= self.warmup {
            self.lr
        } else {
            self.lr * (step + 1) as f64 / self.warmup as f64
        };
        match self.lr_decay {
            Some(d) if step > d.from_step && self.steps > d.from_step + 1 => {
                let span = (self.steps - 1 - d.from_step) as f64;
                let f = ((step - d.from_step) as f64 / span).min(1.0);
                base + (d.final_lr - base) * f
            }
            _ => base,
        }
    }

    pub(crate) fn check(&self, stage: &str) -> TrainResult<()> {
        let field = |f: &str| format!("{stage}.{f}");
        if self.batch == 0 {
            return Err(TrainError::config(field("batch"), "must be at least 1"));
        }
        if self.checkpoint_every == 0 {
            return Err(TrainError::config(
                field("checkpoint_every"),
                "must be at least 1",
            ));
        }
        if self.keep_checkpoints == 0 {
            return Err(TrainError::config(
                field("keep_checkpoints"),
                "must be at least 1",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(TrainError::config(
                field("lr"),
                format!("{} is not a positive number", self.lr),
            ));
        }
        if let Some(clip) = self.grad_clip
            && !(clip.is_finite() && clip > 0.0)
        {
            return Err(TrainError::config(
                field("grad_clip"),
                format!("{clip} is not a positive number"),
            ));
        }
        if let Some((b1, b2)) = self.adam_betas
            && !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2))
        {
            return Err(TrainError::config(
                field("adam_betas"),
                format!("({b1}, {b2}): each must be in [0, 1)"),
            ));
        }
        if let Some(decay) = self.ema_decay
            && !(0.0..1.0).contains(&decay)
        {
            return Err(TrainError::config(
                field("ema_decay"),
                format!("{decay} is not within [0, 1)"),
            ));
        }
        if let Some(mean) = self.checkpoint_mean {
            let reason = if self.ema_decay.is_some() {
                Some("a stage keeps either a moving average (`ema_decay`) or a checkpoint mean, not both".to_string())
            } else if mean.from_step == 0 || mean.from_step >= self.steps {
                Some(format!(
                    "from_step {} is not within [1, steps = {})",
                    mean.from_step, self.steps
                ))
            } else if !mean.from_step.is_multiple_of(self.checkpoint_every) {
                Some(format!(
                    "from_step {} is not a checkpoint step (a multiple of checkpoint_every = {})",
                    mean.from_step, self.checkpoint_every
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(TrainError::config(field("checkpoint_mean"), reason));
            }
        }
        if let Some(d) = self.lr_decay {
            if !(d.final_lr.is_finite() && d.final_lr >= 0.0 && d.final_lr <= self.lr) {
                return Err(TrainError::config(
                    field("lr_decay.final_lr"),
                    format!("{} is not within [0, lr = {}]", d.final_lr, self.lr),
                ));
            }
            if d.from_step >= self.steps {
                return Err(TrainError::config(
                    field("lr_decay.from_step"),
                    format!("{} is not below steps ({})", d.from_step, self.steps),
                ));
            }
        }
        Ok(())
    }
}

/// The VAE stage: the Oobleck encoder/decoder of the model config's `pretransform` section,
/// trained on random crops of corpus clips (see [`super::vae`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeStageConfig {
    /// The optimisation loop.
    #[serde(flatten)]
    pub optim: LoopSettings,
    /// Samples per training crop (a multiple of the VAE's down-sampling ratio).
    pub crop: usize,
    /// FFT sizes of the multi-resolution STFT loss (hop = size / 4, Hann window).
    pub stft_sizes: Vec<usize>,
    /// Weight of the multi-resolution STFT loss.
    pub stft_weight: f64,
    /// Compare the STFT loss's magnitudes in this many mel bands per resolution (at most the
    /// resolution's bin count) instead of linear bins (`None`: linear bins, as the first demo
    /// runs did). See `stft::StftBasis::with_mel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stft_mel_bands: Option<usize>,
    /// Weight of the waveform L1 loss.
    pub l1_weight: f64,
    /// Weight of the frame-mean L1 loss: `|mean(y) - mean(x)|` over each latent frame's samples
    /// (0, the default: none). It holds the output's DC and sub-frame-rate content to the
    /// input's: the SnakeBeta activations rectify (`sin^2 >= 0`), so a decoder's offset depends
    /// on its signal, and the STFT terms alone let a resumed demo run drift to a constant
    /// offset in silence that the event detector counts as an event (`docs/training.md`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub dc_weight: f64,
    /// Weight of the KL divergence of the posterior from N(0, 1) (mean over latent elements).
    pub kl_weight: f64,
    /// The floor of the STFT loss's log magnitudes, in dB below the target's loudest bin
    /// (`None`: an absolute floor of 1e-4, what the first demo run started with). See
    /// `stft::multi_resolution_stft_loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_floor_db: Option<f64>,
    /// How that floor applies: `added` to both magnitudes (the default) or taken as their
    /// minimum (`max`). See `stft::FloorMode`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub log_floor_mode: super::stft::FloorMode,
    /// Steps over which the posterior noise the decoder sees ramps linearly from none (the
    /// decoder reconstructs the posterior mean) to its full scale (`None`: full from the first
    /// step, as the first demo runs did). At initialisation the encoder's posterior mean is
    /// tiny (RMS ~7e-3 at the demo sizes) and its standard deviation `softplus(0) = 0.69`, so a
    /// sampled latent is almost pure noise; the ramp lets the decoder see the mean first (on
    /// its own it did not make the demo runs reconstruct: `docs/training.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posterior_noise_warmup: Option<u64>,
    /// The scales of the initial convolution weights (`pytorch_default`, what the first demo
    /// runs used, or `scale_preserving`; see `init::InitScheme`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub init: super::init::InitScheme,
    /// Hold the decoder's biases at zero (not trained). A probe: the demo runs' decoders learned
    /// per-channel constants that parked SnakeBeta activations in their flat region and gated
    /// the latent out; with the biases held at zero the output fell to silence instead
    /// (`docs/training.md`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub zero_decoder_biases: bool,
    /// Hold the encoder as it is (not trained): a fine-tune of the decoder alone, which keeps
    /// the latent space that a teacher is being trained on (set it in a run's `run.json` to
    /// continue a VAE after its export was imported by a teacher run; the encoder's tensors of
    /// the new export are then bit-identical to the imported ones).
    #[serde(default, skip_serializing_if = "is_default")]
    pub freeze_encoder: bool,
    /// Start the stage from the weights of this VAE file instead of a random initialisation
    /// (`None`, the default): an earlier run's `export/pretransform/vae.safetensors`, or any
    /// file in the layout `audiox convert` writes, at the run's VAE sizes and holding nothing
    /// else. The optimiser starts afresh; the file is read only at step 0 (a resumed stage
    /// reads its checkpoint). With `freeze_encoder` this fine-tunes the decoder of a finished
    /// VAE whose run folder is gone: the export's encoder is the file's, bit for bit, so
    /// `--update-decoder` takes it into a run that imported that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
    /// A compression curriculum (`None`: none): the decoder first decodes log band energies of
    /// the audio instead of the encoder's latent, while the encoder learns to predict them
    /// (see `guide::LatentGuide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_guide: Option<super::guide::LatentGuideConfig>,
}

impl VaeStageConfig {
    /// Checks every value for a VAE of down-sampling ratio `ratio` on corpus clips of `clip`
    /// samples; `section` (`vae`, `decoder`) prefixes the field names of errors. `continues`
    /// says why the stage starts from trained weights, if it does (`with vae.init_from`): the
    /// settings for a VAE trained from its initialisation are then refused.
    pub fn check(
        &self,
        section: &str,
        ratio: usize,
        clip: usize,
        continues: Option<&str>,
    ) -> TrainResult<()> {
        self.optim.check(section)?;
        let field = |f: &str| format!("{section}.{f}");
        if self.crop == 0 || !self.crop.is_multiple_of(ratio) {
            return Err(TrainError::config(
                field("crop"),
                format!(
                    "{} is not a positive multiple of the VAE ratio {ratio}",
                    self.crop
                ),
            ));
        }
        if self.crop > clip {
            return Err(TrainError::config(
                field("crop"),
                format!(
                    "{} is longer than a corpus clip ({clip} samples)",
                    self.crop
                ),
            ));
        }
        if self.stft_sizes.iter().any(|&n| n < 4 || n > self.crop) {
            return Err(TrainError::config(
                field("stft_sizes"),
                format!(
                    "{:?}: every size must be within 4..={}",
                    self.stft_sizes, self.crop
                ),
            ));
        }
        for (name, w) in [
            ("stft_weight", self.stft_weight),
            ("l1_weight", self.l1_weight),
            ("dc_weight", self.dc_weight),
            ("kl_weight", self.kl_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(TrainError::config(field(name), format!("{w} is not >= 0")));
            }
        }
        if let Some(db) = self.log_floor_db
            && !(db.is_finite() && db < 0.0)
        {
            return Err(TrainError::config(
                field("log_floor_db"),
                format!("{db} is not a level below 0 dB"),
            ));
        }
        if let Some(why) = continues {
            // Both start the decoder in a state trained weights contradict.
            for (name, set) in [
                ("latent_guide", self.latent_guide.is_some()),
                ("zero_decoder_biases", self.zero_decoder_biases),
            ] {
                if set {
                    return Err(TrainError::config(
                        field(name),
                        format!(
                            "a setting for a VAE trained from its initialisation: remove it \
                             {why}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The DMD student stage (see [`super::dmd`]): the 4-step student distilled from the teacher
/// by distribution matching, with a fake-score model trained online and a regression term on
/// cached teacher trajectories.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentStageConfig {
    /// The optimisation loop (both optimisers follow its learning-rate schedule; `steps` counts
    /// generator updates).
    #[serde(flatten)]
    pub optim: LoopSettings,
    /// Student sampling steps: the student is trained for the times of
    /// `audiox_sampler::Dmd::new(student_steps)` (the reference student: 4, linear from 1).
    pub student_steps: usize,
    /// Classifier-free guidance scale of the teacher's ("real") score in the
    /// distribution-matching gradient (1 = no guidance).
    pub guidance_scale: f32,
    /// Updates of the fake-score model per generator update (at least 1).
    pub fake_updates: usize,
    /// The fake-score model's learning rate, as a multiple of the loop's.
    pub fake_lr_ratio: f64,
    /// The distribution-matching gradient noises the student's output to a time uniform in
    /// `[t_min, t_max]` (the fake-score model is trained on the same range).
    pub t_min: f32,
    /// See `t_min`.
    pub t_max: f32,
    /// Weight of the regression term (latent MSE between the student's one-step output from a
    /// cached noise and the teacher's multi-step result from the same noise); 0 disables it.
    pub regression_weight: f64,
    /// Teacher trajectories computed once and cached in the run folder.
    pub regression_pairs: usize,
    /// Pairs per step in the regression term.
    pub regression_batch: usize,
    /// The step (0-based) from which the regression term is off (its pairs no longer drawn):
    /// the steps before it have the term, the later ones do not, as in run HR0 (run DC1's 1,400
    /// steps with it, then 400 without it beside the step-halving term). `None` (the default,
    /// not written): the term on every step. A stage resumed at or past this step does not
    /// load or compute the pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression_until: Option<u64>,
    /// Euler steps of the teacher trajectories (with `guidance_scale`).
    pub teacher_steps: usize,
    /// Masked audio prompts made from the step's training clips, as the teacher's
    /// `teacher.audio_prompt` (`None`, the default: every row gets the silent prompt). See
    /// `teacher::TeacherPrompts::with_clip_prompts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_prompt: Option<super::teacher::PromptMasking>,
    /// Each row of each step gets a caption no earlier row had: row `j` of step `s` takes the
    /// `s x batch + j`-th distinct training caption ([`crate::corpus::Corpus::distinct_training_indices`])
    /// instead of training clip `s x batch + j`, whose captions repeat the grammar's frequent
    /// short scenes. The held-out captions of the metric are distinct captions too, so this
    /// draws scenes of as many events as the metric asks for. The grammar has a bounded number
    /// of distinct training captions (9,948 for the demo corpus: 2,487 steps of batch 4); a
    /// stage of more rows is refused. `false` (the default, not written) for runs made before
    /// the field existed.
    #[serde(default, skip_serializing_if = "is_default")]
    pub distinct_captions: bool,
    /// An adversarial critic on the student's outputs against encoded corpus clips
    /// ([`super::critic`]); `None` (the default, not written): no critic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic: Option<super::critic::CriticConfig>,
    /// Keep only teacher trajectories that do what their caption asks as regression pairs
    /// ([`PairFilter`]); `None` (the default, not written): the first `regression_pairs`
    /// training captions, whatever the teacher made of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression_filter: Option<PairFilter>,
    /// The step-halving term ([`StepHalving`]); `None` (the default, not written): none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halving: Option<StepHalving>,
    /// A second guidance for the stage's later steps ([`GuidanceSwitch`]); `None` (the
    /// default, not written): `guidance_scale` on every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_switch: Option<GuidanceSwitch>,
}

/// A change of the teacher's guidance at a step of the student stage: from `from_step` on, the
/// teacher's score in the distribution-matching gradient and the regression term's cached
/// trajectories use `guidance_scale` instead of the stage's own. The trajectories at the new
/// guidance are computed from the same noise and captions as the first ones and cached beside
/// them (`student/teacher_pairs_switched.safetensors`). One run with a switch at step `S`
/// equals a run of `S` steps at the first guidance continued from its checkpoint at the second
/// one, its pairs recomputed there (how run HG4 was made from run DC1's step 1,400).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidanceSwitch {
    /// The first step (0-based, of the stage) with the new guidance; before the stage's last.
    pub from_step: u64,
    /// The classifier-free guidance scale from `from_step` on.
    pub guidance_scale: f32,
}

/// The step-halving term of the student stage: at the generator's step `k` the student's
/// prediction is pulled (mean squared error, weight `weight`) towards what two half steps of
/// a frozen copy of the student make from the same input: its prediction there, re-noised
/// with fresh noise to the time halfway to the next step, predicted again. One step of the
/// schedule is taught what the sampler with twice the steps does in two, as in progressive
/// distillation, on the schedule the student keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepHalving {
    /// Weight of the term beside the DMD surrogate (weight 1).
    pub weight: f64,
    /// The first step (0-based, of the stage) whose student update includes the term. 0: from
    /// the first step.
    #[serde(default)]
    pub from_step: u64,
    /// Take the two half steps with the student as it was at `from_step` (a frozen copy, kept
    /// in `student/halving/` for resumes) instead of the student of each step: the half
    /// steps' times are not on the schedule the stage trains, so the student's own half steps
    /// drift as it trains (run HV1). `false` (the default, not written): the current student.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub frozen_target: bool,
    /// With `frozen_target`: take the frozen copy's weights from this exported student file
    /// (`export/audiox_turbo/audiox_turbo.safetensors` of another run, the DiT under its
    /// official names; a relative path is relative to the run folder) instead of the student
    /// of `from_step`, e.g. a student whose sampler with twice the steps is better than this
    /// run's (run HB1). Read when the stage starts at or before `from_step` and kept in
    /// `student/halving/` as the student's own copy is, so that a resume after `from_step`
    /// needs the file no longer. `None` (the default, not written): the student of
    /// `from_step`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<PathBuf>,
    /// Re-noise the first half step's prediction with the noise the input holds (`(z - (1 -
    /// t) x0) / t`: the flow's straight step to the half time, a target that is a function of
    /// the input) instead of fresh noise (whose mean the student otherwise learns: one source
    /// of blur). `false` (the default, not written): fresh noise, as the sampler re-noises.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implied_noise: bool,
}

/// The regression pairs filtered by the instruction-following detector: the teacher runs on
/// the first `candidates` distinct training captions
/// ([`crate::corpus::Corpus::distinct_training_indices`]: scenes of as many events as the
/// metric's held-out captions), each result is decoded by the run's VAE and its events
/// detected ([`crate::metric`]), and the first `regression_pairs` results with the count, the
/// order and the pitches their scene asks for become the pairs. The student then regresses
/// only onto teacher results that follow their caption (rejection sampling of the teacher).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairFilter {
    /// Teacher trajectories tried at most (at least `regression_pairs`; the computation stops
    /// once `regression_pairs` are accepted).
    pub candidates: usize,
}

/// Most candidates a [`PairFilter`] may ask for (each is a multi-step teacher run).
pub const MAX_PAIR_CANDIDATES: usize = 65_536;

impl StudentStageConfig {
    /// The demo run's settings: those of the shipped demo student (run HGS0 in
    /// `docs/training.md`, `training-checkpoints/HGS0/run.json`): run BI2's (1,400 steps at lr
    /// 2e-5, guidance 2 for the teacher's score and its 64 cached trajectories, regression
    /// weight 1) with a new caption for every row (`distinct_captions`, run DC1) and 400 steps
    /// more with the step-halving term on a frozen target from step 1,400 (run HV2) and the
    /// teacher's guidance switched to 4 there, its trajectories recomputed (`guidance_switch`,
    /// runs HG4 and HGS0), about 1.5 hours of CPU at the demo DiT width. A checkpoint every
    /// 50 steps, the last ten kept, so that checkpoints can be scored on held-out captions
    /// (its scores move by several points from one to the next).
    pub fn demo() -> Self {
        StudentStageConfig {
            optim: LoopSettings {
                steps: 1800,
                batch: 4,
                lr: 2e-5,
                warmup: 50,
                checkpoint_every: 50,
                keep_checkpoints: 10,
                grad_clip: None,
                adam_betas: None,
                lr_decay: None,
                ema_decay: None,
                checkpoint_mean: None,
            },
            student_steps: 4,
            guidance_scale: 2.0,
            fake_updates: 1,
            fake_lr_ratio: 1.0,
            t_min: 0.02,
            t_max: 0.98,
            regression_weight: 1.0,
            regression_until: None,
            regression_pairs: 64,
            regression_batch: 4,
            teacher_steps: 25,
            audio_prompt: None,
            distinct_captions: true,
            critic: None,
            regression_filter: None,
            halving: Some(StepHalving {
                weight: 1.0,
                from_step: 1400,
                frozen_target: true,
                reference: None,
                implied_noise: false,
            }),
            guidance_switch: Some(GuidanceSwitch {
                from_step: 1400,
                guidance_scale: 4.0,
            }),
        }
    }

    /// The teacher's guidance scale at step `step` (0-based): `guidance_switch`'s from its
    /// `from_step` on, `guidance_scale` before it and without a switch.
    pub fn guidance_at(&self, step: u64) -> f32 {
        match &self.guidance_switch {
            Some(switch) if step >= switch.from_step => switch.guidance_scale,
            _ => self.guidance_scale,
        }
    }

    /// Checks every value; `stage` prefixes the field names of errors (`student`).
    pub fn check(&self, stage: &str) -> TrainResult<()> {
        self.optim.check(stage)?;
        let field = |f: &str| format!("{stage}.{f}");
        if self.optim.ema_decay.is_some() {
            return Err(TrainError::config(
                field("ema_decay"),
                "the DMD stage keeps no moving average (set it on the teacher or the VAE)",
            ));
        }
        if self.optim.checkpoint_mean.is_some() {
            return Err(TrainError::config(
                field("checkpoint_mean"),
                "the DMD stage averages no checkpoints (set it on the teacher or the VAE)",
            ));
        }
        if let Some(masking) = &self.audio_prompt {
            masking.check(&field("audio_prompt"))?;
        }
        if let Some(critic) = &self.critic {
            critic.check(stage)?;
        }
        let at_least_one = [
            ("student_steps", self.student_steps),
            ("fake_updates", self.fake_updates),
            ("teacher_steps", self.teacher_steps),
        ];
        for (name, v) in at_least_one {
            if v == 0 {
                return Err(TrainError::config(field(name), "must be at least 1"));
            }
        }
        if !self.guidance_scale.is_finite() {
            return Err(TrainError::config(
                field("guidance_scale"),
                format!("{} is not finite", self.guidance_scale),
            ));
        }
        if let Some(switch) = &self.guidance_switch {
            if !switch.guidance_scale.is_finite() {
                return Err(TrainError::config(
                    field("guidance_switch.guidance_scale"),
                    format!("{} is not finite", switch.guidance_scale),
                ));
            }
            if switch.from_step >= self.optim.steps {
                return Err(TrainError::config(
                    field("guidance_switch.from_step"),
                    format!(
                        "{} is not before the stage's last step ({} steps)",
                        switch.from_step, self.optim.steps
                    ),
                ));
            }
            if self.regression_filter.is_some() {
                return Err(TrainError::config(
                    field("guidance_switch"),
                    "filtered regression pairs (regression_filter) are kept for one guidance only",
                ));
            }
        }
        if !(self.fake_lr_ratio.is_finite() && self.fake_lr_ratio > 0.0) {
            return Err(TrainError::config(
                field("fake_lr_ratio"),
                format!("{} is not a positive number", self.fake_lr_ratio),
            ));
        }
        if !(self.t_min.is_finite()
            && self.t_max.is_finite()
            && 0.0 < self.t_min
            && self.t_min <= self.t_max
            && self.t_max < 1.0)
        {
            return Err(TrainError::config(
                field("t_min"),
                format!(
                    "[{}, {}] must satisfy 0 < t_min <= t_max < 1",
                    self.t_min, self.t_max
                ),
            ));
        }
        if !(self.regression_weight.is_finite() && self.regression_weight >= 0.0) {
            return Err(TrainError::config(
                field("regression_weight"),
                format!("{} is not >= 0", self.regression_weight),
            ));
        }
        if self.regression_weight > 0.0
            && (self.regression_pairs == 0 || self.regression_batch == 0)
        {
            return Err(TrainError::config(
                field("regression_pairs"),
                "a regression term needs at least one pair and a batch of at least 1",
            ));
        }
        if let Some(halving) = &self.halving {
            if !(halving.weight.is_finite() && halving.weight >= 0.0) {
                return Err(TrainError::config(
                    field("halving.weight"),
                    format!("{} is not >= 0", halving.weight),
                ));
            }
            if halving.reference.is_some() && !halving.frozen_target {
                return Err(TrainError::config(
                    field("halving.reference"),
                    "a reference file is a frozen target: set frozen_target",
                ));
            }
        }
        if self.regression_until.is_some() && self.regression_weight <= 0.0 {
            return Err(TrainError::config(
                field("regression_until"),
                "ends the regression term, but regression_weight is 0",
            ));
        }
        if let Some(filter) = &self.regression_filter {
            if self.regression_weight <= 0.0 {
                return Err(TrainError::config(
                    field("regression_filter"),
                    "filters the regression pairs, but regression_weight is 0",
                ));
            }
            if filter.candidates < self.regression_pairs || filter.candidates > MAX_PAIR_CANDIDATES
            {
                return Err(TrainError::config(
                    field("regression_filter.candidates"),
                    format!(
                        "{} must be between regression_pairs ({}) and {MAX_PAIR_CANDIDATES}",
                        filter.candidates, self.regression_pairs
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Everything that determines a run: seeds, corpus, model (official schema) and stages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The run seed: initial weights, batches and noise of every stage derive from it.
    pub seed: u64,
    /// The training corpus.
    pub corpus: CorpusSettings,
    /// The model, in the official `config.json` schema (validated by
    /// `audiox::ModelConfig::from_json_value`).
    pub model: serde_json::Value,
    /// The VAE stage.
    pub vae: VaeStageConfig,
    /// The DiT + MAF teacher stage (with the small T5 and the conditioners' trainable parts).
    pub teacher: TeacherStageConfig,
    /// The DMD student stage (distils the teacher's DiT; the text side stays the teacher's).
    pub student: StudentStageConfig,
    /// The decoder stage, if the run has one: the run's VAE continued with its encoder frozen
    /// (`freeze_encoder`), once the teacher is finished, so that the exported VAE decodes
    /// better while the latents the teacher and the student learnt from stay the same (see
    /// [`super::pipeline::train_decoder`]). Absent in runs made before the stage existed, and
    /// then not written, so their `run.json` reads and compares unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<VaeStageConfig>,
}

impl RunConfig {
    /// The demo run: [`DEMO_MODEL_CONFIG`] on the default 16 kHz corpus with the recipe of the
    /// shipped demo model's teacher, student and VAE decoder (`docs/training.md`, "The built-in
    /// run"): about five and a half hours on two CPU cores after the VAE stage, about eight in
    /// all.
    pub fn demo() -> Self {
        // The recipe of the best VAE run so far (G3 in docs/training.md, with the mel loss
        // from the start): the latent guide, mel-band STFT loss, PyTorch's initial scales,
        // plain Adam. Run BI's VAE; the decoder stage below finishes its decoder.
        let vae = VaeStageConfig {
            optim: LoopSettings {
                steps: 8_000,
                batch: 8,
                lr: 3e-4,
                warmup: 100,
                checkpoint_every: 100,
                keep_checkpoints: 2,
                grad_clip: None,
                adam_betas: None,
                lr_decay: None,
                ema_decay: None,
                checkpoint_mean: None,
            },
            crop: 7_680,
            stft_sizes: vec![2048, 1024, 512, 256, 128],
            stft_weight: 1.0,
            stft_mel_bands: Some(64),
            l1_weight: 1.0,
            dc_weight: 10.0,
            kl_weight: 1e-4,
            log_floor_db: Some(-60.0),
            log_floor_mode: super::stft::FloorMode::Added,
            posterior_noise_warmup: Some(500),
            init: super::init::InitScheme::PytorchDefault,
            zero_decoder_biases: false,
            freeze_encoder: false,
            init_from: None,
            latent_guide: Some(super::guide::LatentGuideConfig {
                steps: 1_500,
                blend: 1_000,
                weight: 1.0,
            }),
        };
        // The recipe of the shipped VAE (run VD2 in docs/training.md): 4,000 more steps of the
        // VAE's loss with its encoder frozen, linear STFT bins instead of mel bands (the highs
        // the mel bands left out), no curricula, and a moving average of the weights.
        let decoder = VaeStageConfig {
            optim: LoopSettings {
                steps: 4_000,
                ema_decay: Some(0.998),
                ..vae.optim.clone()
            },
            stft_mel_bands: None,
            posterior_noise_warmup: None,
            freeze_encoder: true,
            latent_guide: None,
            ..vae.clone()
        };
        RunConfig {
            seed: 0,
            corpus: CorpusSettings {
                sample_rate: 16_000,
                duration_s: 10.0,
                seed: 0,
                held_out_every: 10,
                // A tenth of the layout's random timing range: with the whole range the demo
                // teacher (1.6 M parameters, a few CPU hours) learnt the kinds of events but not
                // their number, and made silence for single events (docs/training.md, session
                // of 2026-12-02 morning).
                timing_jitter: 0.1,
            },
            model: serde_json::from_str(DEMO_MODEL_CONFIG)
                .expect("the built-in demo config is JSON"),
            vae,
            // The recipe of the shipped demo teacher (run TP2 and its mean TPA in
            // docs/training.md): 80 slot tokens before the caption, 40,000 steps of layout
            // pretraining on freshly drawn scenes (text side and conditioning maps only), then
            // 3,000 flow steps with masked audio prompts, the last 900 with a falling learning
            // rate, and the mean of the checkpoints of the last 1,400 steps as the teacher.
            teacher: TeacherStageConfig {
                optim: LoopSettings {
                    steps: 43_000,
                    batch: 16,
                    lr: 5e-4,
                    warmup: 200,
                    checkpoint_every: 100,
                    keep_checkpoints: 2,
                    grad_clip: None,
                    adam_betas: None,
                    lr_decay: Some(LrDecay {
                        from_step: 42_100,
                        final_lr: 2.5e-5,
                    }),
                    ema_decay: None,
                    checkpoint_mean: Some(CheckpointMean { from_step: 41_600 }),
                },
                cond_dropout: 0.1,
                time_sampler: TimeSampler::LogitNormal,
                clip_pool: 4_096,
                t5: demo_t5_config(DEMO_TEXT_SLOTS),
                clip: serde_json::from_str(crate::tokenizer::DEMO_CLIP_CONFIG_JSON)
                    .expect("the built-in CLIP config is JSON"),
                audio_prompt: Some(super::teacher::PromptMasking {
                    clip_share: 0.5,
                    blank_ratio: [0.25, 0.9],
                    to_end_share: 0.5,
                }),
                timeline: Some(super::timeline::TimelineLoss {
                    weight: 1.0,
                    oracle: false,
                    basis: None,
                    pretrain_steps: 40_000,
                    pretrain_scenes: 1_000_000_000,
                }),
                text_fill: 0,
                text_slots: DEMO_TEXT_SLOTS,
                init_from: None,
            },
            student: StudentStageConfig::demo(),
            decoder: Some(decoder),
        }
    }

    /// The base run this run trains before its own stages (`teacher.init_from.base`), if any.
    pub fn base(&self) -> Option<&RunConfig> {
        self.teacher
            .init_from
            .as_ref()
            .and_then(|init| init.base.as_deref())
    }

    /// The model configuration, parsed and validated.
    pub fn model_config(&self) -> TrainResult<audiox::ModelConfig> {
        Ok(audiox::ModelConfig::from_json_value(&self.model)?)
    }

    /// Checks every value (the model config included).
    pub fn validate(&self) -> TrainResult<()> {
        let model = self.model_config()?;
        crate::corpus::Corpus::new((&self.corpus).into())?;
        if model.sample_rate != self.corpus.sample_rate {
            return Err(TrainError::config(
                "corpus.sample_rate",
                format!(
                    "{} differs from the model's sample_rate {}",
                    self.corpus.sample_rate, model.sample_rate
                ),
            ));
        }
        let ratio: usize = super::vae::vae_config(&model)
            .encoder
            .strides
            .iter()
            .product();
        let clip = (self.corpus.duration_s * self.corpus.sample_rate as f32) as usize;
        let continues = self.vae.init_from.is_some().then_some("with vae.init_from");
        self.vae.check("vae", ratio, clip, continues)?;
        if let Some(decoder) = &self.decoder {
            let field = |f: &str| format!("decoder.{f}");
            if !decoder.freeze_encoder {
                return Err(TrainError::config(
                    field("freeze_encoder"),
                    "the decoder stage must keep the encoder the teacher's latents come from: \
                     set it to true",
                ));
            }
            if decoder.init_from.is_some() {
                return Err(TrainError::config(
                    field("init_from"),
                    "the decoder stage starts from the run's own VAE: remove it (a VAE stage \
                     with vae.init_from continues a VAE file)",
                ));
            }
            let continues = "in the decoder stage, which continues the run's VAE";
            decoder.check("decoder", ratio, clip, Some(continues))?;
        }
        self.teacher.check(&model, clip)?;
        if let Some(init) = &self.teacher.init_from {
            init.check(self)?;
        }
        self.student.check(StageName::Student.as_str())?;
        Ok(())
    }

    /// Reads a run configuration file (JSON).
    pub fn from_file(path: impl AsRef<Path>) -> TrainResult<Self> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| TrainError::config(path.display().to_string(), e.to_string()))
    }
}

/// The stages of the pipeline, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageName {
    /// The Oobleck VAE.
    Vae,
    /// The DiT + MAF teacher (rectified flow), with the T5 encoder.
    Teacher,
    /// The DMD student (distilled from the teacher).
    Student,
    /// The VAE's decoder fine-tuned with its encoder frozen, after the teacher.
    Decoder,
}

impl StageName {
    /// The stage's folder name and command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Vae => "vae",
            StageName::Teacher => "teacher",
            StageName::Student => "student",
            StageName::Decoder => "decoder",
        }
    }

    /// A number that separates the stages' random streams.
    pub(crate) fn stream(self) -> u64 {
        match self {
            StageName::Vae => 1,
            // The teacher stage trains the text encoder too; 3 stays unused.
            StageName::Teacher => 2,
            StageName::Student => 4,
            // Its batches are the VAE stage's (`VaeStage`): the shipped decoder was trained as
            // a VAE stage. Kept apart for anything else drawn from it.
            StageName::Decoder => 5,
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A run directory (see the module docs).
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
    config: RunConfig,
}

impl RunDir {
    /// Opens `root` for `config`: creates it and writes `run.json` on a new run; on an existing
    /// run checks that `run.json` holds the same configuration. One exception: a stored
    /// configuration that differs only in what no started stage reads is replaced by `config`:
    /// what the VAE stage does not read (the `teacher`, `student` and `decoder` sections, the
    /// model's conditioning and diffusion sections) while the teacher stage has no checkpoint,
    /// and the `student` or `decoder` section while that stage has none (a run started before
    /// a stage existed continues with the stages it trained). Another: a configuration that only raises
    /// some stages' `steps` continues them exactly, unless a later stage has started (see
    /// `step_extension`).
    pub fn open(root: impl Into<PathBuf>, config: RunConfig) -> TrainResult<Self> {
        let root = root.into();
        config.validate()?;
        fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
        let path = root.join("run.json");
        let ours =
            serde_json::to_value(&config).map_err(|e| TrainError::config("run", e.to_string()))?;
        if path.exists() {
            let text = fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
            let stored: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| TrainError::ConfigMismatch {
                    path: path.clone(),
                    reason: format!("unreadable: {e}"),
                })?;
            if first_difference(&stored, &ours, String::new()).is_some() {
                if let Some(reason) = refuses_extension(&stored, &ours, &root)? {
                    return Err(TrainError::ConfigMismatch { path, reason });
                }
                // Only what no started stage depends on changed: the stored configuration is
                // extended (see `refuses_extension`).
                let text = serde_json::to_string_pretty(&ours)
                    .map_err(|e| TrainError::config("run", e.to_string()))?;
                super::checkpoint::write_atomic(&path, text.as_bytes())?;
            }
        } else {
            let text = serde_json::to_string_pretty(&ours)
                .map_err(|e| TrainError::config("run", e.to_string()))?;
            super::checkpoint::write_atomic(&path, text.as_bytes())?;
        }
        Ok(RunDir { root, config })
    }

    /// Opens an existing run directory with the configuration stored in it.
    pub fn resume(root: impl Into<PathBuf>) -> TrainResult<Self> {
        let root = root.into();
        let config = RunConfig::from_file(root.join("run.json"))?;
        Self::open(root, config)
    }

    /// The run's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The run's configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The folder of a stage (created on demand by the stage).
    pub fn stage_dir(&self, stage: StageName) -> PathBuf {
        self.root.join(stage.as_str())
    }
}

/// Why a stored run configuration may not be replaced by `ours` (`None`: it may). It may when
/// the two differ only in what the VAE stage does not read (the teacher, student and decoder
/// sections, and the model's conditioning, diffusion, `_tiny_hardcoded_sizes` and `training`
/// sections) and the teacher stage has not started (no checkpoint), or only in the student or
/// decoder section and that stage has not started. This lets a run started before a stage
/// existed (whose `run.json` lacks that stage's section) continue with it, keeping what it
/// trained; anything a started stage depends on must still be identical.
fn refuses_extension(
    stored: &serde_json::Value,
    ours: &serde_json::Value,
    root: &Path,
) -> TrainResult<Option<String>> {
    if let Some(verdict) = step_extension(stored, ours, root)? {
        return Ok(verdict);
    }
    let vae_view = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("teacher");
            o.remove("student");
            o.remove("decoder");
        }
        if let Some(m) = v.get_mut("model").and_then(|m| m.as_object_mut()) {
            m.remove("_tiny_hardcoded_sizes");
            m.remove("training");
            if let Some(inner) = m.get_mut("model").and_then(|m| m.as_object_mut()) {
                inner.remove("conditioning");
                inner.remove("diffusion");
            }
        }
        v
    };
    if let Some(vae_diff) = first_difference(&vae_view(stored), &vae_view(ours), String::new()) {
        return Ok(Some(vae_diff));
    }
    let started = |stage: StageName| -> TrainResult<bool> {
        let checkpoints = super::checkpoint::Checkpoints::new(&root.join(stage.as_str()));
        Ok(checkpoints.newest()?.is_some())
    };
    let without = |v: &serde_json::Value, sections: &[&str]| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            for section in sections {
                o.remove(*section);
            }
        }
        v
    };
    // The student and the decoder stages read nothing of each other's sections.
    for (stage, not_read) in [
        (StageName::Teacher, &["student", "decoder"][..]),
        (StageName::Student, &["decoder"][..]),
        (StageName::Decoder, &["student"][..]),
    ] {
        if let Some(stage_diff) = first_difference(
            &without(stored, not_read),
            &without(ours, not_read),
            String::new(),
        ) && started(stage)?
        {
            return Ok(Some(stage_diff));
        }
    }
    Ok(None)
}

/// The stages in training order, with the JSON section of each.
const STAGE_SECTIONS: [(StageName, &str); 4] = [
    (StageName::Vae, "vae"),
    (StageName::Teacher, "teacher"),
    (StageName::Student, "student"),
    (StageName::Decoder, "decoder"),
];

/// Whether `ours` only raises some stages' `steps` over `stored` (`None`: it changes something
/// else too, or nothing of the kind). Such a change continues those stages exactly where they
/// stopped: every stage's learning rate is a warm-up then a constant
/// ([`LoopSettings::lr_at`]) and each step's batch depends only on the step number, so a run
/// of N steps resumed to N + M computes what a run of N + M steps would have. It is refused
/// (`Some(Some(reason))`) when a later stage has started, since that stage learned from the
/// shorter one (the decoder stage learns from the VAE and waits for the teacher, not the
/// student), and accepted (`Some(None)`) otherwise.
fn step_extension(
    stored: &serde_json::Value,
    ours: &serde_json::Value,
    root: &Path,
) -> TrainResult<Option<Option<String>>> {
    let steps = |v: &serde_json::Value, section: &str| v.get(section)?.get("steps")?.as_u64();
    let mut ours_at_stored_steps = ours.clone();
    let mut extended = Vec::new();
    for (i, (_, section)) in STAGE_SECTIONS.iter().enumerate() {
        if let (Some(before), Some(after)) = (steps(stored, section), steps(ours, section))
            && after > before
        {
            ours_at_stored_steps[*section]["steps"] = before.into();
            extended.push((i, *section, before, after));
        }
    }
    if extended.is_empty()
        || first_difference(stored, &ours_at_stored_steps, String::new()).is_some()
    {
        return Ok(None);
    }
    for &(_, section, before, after) in &extended {
        // A decay's slope depends on the stage's length: the steps already taken would not
        // be those of the longer schedule.
        let decays = |v: &serde_json::Value| {
            v.get(section)
                .and_then(|s| s.get("lr_decay"))
                .is_some_and(|d| !d.is_null())
        };
        if decays(stored) || decays(ours) {
            return Ok(Some(Some(format!(
                "{section}.steps: stored {before}, now {after}, with an lr_decay whose slope \
                 depends on the steps (continue from a copy with a new schedule instead)"
            ))));
        }
    }
    for (i, section, before, after) in extended {
        for (later, later_section) in &STAGE_SECTIONS[i + 1..] {
            if section == "student" && *later == StageName::Decoder {
                // The decoder stage learns nothing from the student.
                continue;
            }
            let checkpoints = super::checkpoint::Checkpoints::new(&root.join(later.as_str()));
            if checkpoints.newest()?.is_some() {
                return Ok(Some(Some(format!(
                    "{section}.steps: stored {before}, now {after}; the {later_section} stage \
                     has started from the {section} stage's {before} steps (start a new run \
                     folder from a copy without the {later_section} stage)"
                ))));
            }
        }
    }
    Ok(Some(None))
}

/// The first JSON path at which `a` and `b` differ, with both values.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, path),
                    (p, q) => Some(format!("{path}: stored {p:?}, now {q:?}")),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}[{i}]"))),
        _ if a == b => None,
        // serde_json's default float parser may read a number back one unit in the last
        // place off what it wrote (no `float_roundtrip` feature): equal within that. An `f32`
        // field is compared widened to f64 (0.1 written by hand is 0.10000000149011612 once
        // read into an f32): equal when both round to the same f32. Integers (seeds, steps)
        // are never compared that loosely.
        (Value::Number(x), Value::Number(y))
            if x.as_f64().zip(y.as_f64()).is_some_and(|(p, q)| {
                (p - q).abs() <= 4.0 * f64::EPSILON * p.abs().max(q.abs())
                    || ((x.is_f64() || y.is_f64())
                        && p as f32 == q as f32
                        && (p as f32).is_finite())
            }) =>
        {
            None
        }
        _ => Some(format!("{at}: stored {a}, now {b}")),
    }
}
