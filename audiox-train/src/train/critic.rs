//! An adversarial critic for the DMD student (`student.critic`): a small convolutional
//! discriminator over clean latents that tells the student's outputs from encoded corpus clips,
//! in the manner of DMD2 (Yin et al., 2024), which adds such a term to distribution matching so
//! that the student learns from real data and not only from its teacher.
//!
//! **Why here.** The student's misses on held-out captions are mostly one event too many or too
//! few, and most over-counted clips hold two onsets 0.15-0.2 s apart, which no corpus clip has
//! (the corpus spaces events at least 0.3 s apart; `docs/training.md`). The teacher's score
//! does not rule such layouts out; a critic that sees real clips might. Tried on the demo
//! student (`docs/training.md`, session of 2026-12-06 afternoon): on each step's four rows the
//! critic stayed at chance and the student did not change; on 64 replay rows it learnt to tell
//! them apart and the student, following it, over-counted more. Off by default.
//!
//! **The critic.** Five 1-D convolutions over the latent's time axis (the latent channels in,
//! [`CriticConfig::width`] channels, two of them of stride 2, LeakyReLU 0.2 between them), one
//! logit per group of four latent frames: a receptive field of 41 latent frames (0.8 s at the
//! demo model's 50 frames per second), wide enough to see two onsets and the gap between them.
//! By default it is unconditional: it judges whether a latent looks like a corpus clip, not
//! whether it follows its caption (the teacher's score does that). With
//! [`CriticConfig::conditional`] it also reads the number of events each row's caption asks for
//! and adds a clip-level logit from its features averaged over the clip (see there).
//!
//! **The losses** (non-saturating, as DMD2): the critic minimises
//! `mean softplus(-D(real)) + mean softplus(D(fake))` on the step's clips (the clean latents
//! of the training clips whose captions the batch uses) against the student's detached outputs;
//! the student adds `weight x mean softplus(-D(x0))` to its loss, through a copy of the critic
//! whose parameters record no gradient. The critic has its own Adam optimiser at
//! [`CriticConfig::lr_ratio`] times the loop's learning rate, and updates once per generator
//! step after the fake-score model: on that step's rows, or with [`CriticConfig::replay`] on
//! the student's outputs of the last rows (this step's added) against their clips' latents.
//!
//! **Checkpoints.** The critic, its optimiser state and its replay rows ([`REPLAY_FILE`]) are
//! saved beside the stage's parts, in `student/critic/checkpoints/step-N/` (written before
//! the parts' checkpoint of the same step, so that every parts checkpoint has its critic),
//! and loaded with them on resume. A stage
//! resumed from a checkpoint without a critic (the critic switched on for a run that already
//! has student steps) starts a fresh critic there, seeded from the run seed and the step.

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig1d};
use burn::optim::ModuleOptimizer;
use burn::tensor::activation::{leaky_relu, softplus};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoints, write_atomic};
use super::error::{TrainError, TrainResult};
use super::init::random_init;
use super::run::LoopSettings;
use super::stage::optimizer;

/// The settings of the student stage's adversarial critic (`student.critic`; see the module
/// docs). Absent (the default) for no critic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticConfig {
    /// Weight of the student's adversarial term `mean softplus(-D(x0))` beside the DMD
    /// surrogate (weight 1) and the regression term.
    pub weight: f64,
    /// The critic's learning rate as a multiple of the loop's.
    #[serde(default = "default_lr_ratio")]
    pub lr_ratio: f64,
    /// Channels of the critic's hidden convolutions.
    #[serde(default = "default_width")]
    pub width: usize,
    /// The first step (0-based, of the stage) whose student update includes the adversarial
    /// term; the critic trains from its first step, so that it has learnt something before
    /// the student follows it. 0: from the first step.
    #[serde(default)]
    pub from_step: u64,
    /// Conditions the critic on the number of events each clip's caption asks for (a real clip
    /// and the student's output for the same caption share it): a learnt embedding of the
    /// count, joined with the critic's features averaged over the whole clip, through a small
    /// MLP to one logit per clip, added to every local logit. The local critic cannot count
    /// (its receptive field is 0.8 s); this one can tell a clip with the asked number of events
    /// from one with another. `false` (the default, not written): unconditional.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conditional: bool,
    /// The critic trains on the student's outputs of the last `replay` rows (this step's
    /// among them, the oldest dropped first) against the real latents of the same clips,
    /// instead of this step's rows alone: at a batch of four a critic sees too few outputs per
    /// update to learn what sets them apart. The rows are saved with the critic's checkpoint.
    /// 0 (the default, not written): this step's rows only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replay: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The most rows [`CriticConfig::replay`] may keep.
pub const MAX_REPLAY: usize = 4096;

/// The file, in a critic checkpoint's folder, holding its replay rows.
pub const REPLAY_FILE: &str = "replay.bin";

/// Event counts the conditional critic embeds: `0 ..= MAX_COUNT` (larger counts share the
/// last row).
pub const MAX_COUNT: usize = 15;

fn default_lr_ratio() -> f64 {
    5.0
}

fn default_width() -> usize {
    64
}

impl CriticConfig {
    /// Refuses settings that cannot train (`key`: the configuration key, for the error).
    pub fn check(&self, key: &str) -> TrainResult<()> {
        let bad = |what: &str| {
            Err(TrainError::config(
                format!("{key}.critic"),
                what.to_string(),
            ))
        };
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return bad("`weight` must be finite and >= 0");
        }
        if !(self.lr_ratio.is_finite() && self.lr_ratio > 0.0) {
            return bad("`lr_ratio` must be finite and > 0");
        }
        if self.width == 0 {
            return bad("`width` must be at least 1");
        }
        if self.replay > MAX_REPLAY {
            return bad("`replay` keeps at most 4096 rows (the critic trains on all of them)");
        }
        Ok(())
    }

    /// The critic for latents of `channels` channels, its weights drawn from `seed`
    /// (PyTorch's default scales, [`random_init`]) on `device`.
    pub fn init(&self, channels: usize, seed: u64, device: &Device) -> Critic {
        let w = self.width;
        let conv = |cin: usize, cout: usize, k: usize, stride: usize| {
            Conv1dConfig::new(cin, cout, k)
                .with_stride(stride)
                .with_padding(PaddingConfig1d::Explicit(k / 2, k / 2))
                .init(device)
        };
        let critic = Critic {
            convs: vec![
                conv(channels, w, 5, 1),
                conv(w, 2 * w, 5, 2),
                conv(2 * w, 2 * w, 5, 2),
                conv(2 * w, 2 * w, 5, 1),
            ],
            head: conv(2 * w, 1, 3, 1),
            count: self.conditional.then(|| CountHead {
                embedding: Param::from_tensor(Tensor::zeros([MAX_COUNT + 1, 2 * w], device)),
                hidden: LinearConfig::new(4 * w, 2 * w).init(device),
                out: LinearConfig::new(2 * w, 1).init(device),
            }),
        };
        random_init(critic, seed)
    }
}

/// The conditional critic's clip-level part ([`CriticConfig::conditional`]): the features
/// averaged over time, joined with the embedding of the asked event count, through a two-layer
/// MLP to one logit per clip.
#[derive(Module, Debug)]
pub struct CountHead {
    /// One row per event count `0 ..= MAX_COUNT`.
    pub embedding: Param<Tensor<2>>,
    /// Features and embedding -> hidden (LeakyReLU 0.2).
    pub hidden: Linear,
    /// Hidden -> one logit.
    pub out: Linear,
}

/// The student stage's critic: latent `[B, C, L]` -> logits `[B, 1, ceil(L / 4)]` (see the
/// module docs).
#[derive(Module, Debug)]
pub struct Critic {
    /// The hidden convolutions, each followed by LeakyReLU 0.2.
    pub convs: Vec<Conv1d>,
    /// The last convolution, to one logit channel.
    pub head: Conv1d,
    /// The clip-level logit of the conditional critic (`None`: unconditional).
    pub count: Option<CountHead>,
}

impl Critic {
    /// The logits of `latent` `[B, C, L]`: `[B, 1, L']`, positive for "looks like a corpus
    /// clip"; `counts` (one per batch item: the events its caption asks for) are read by the
    /// conditional critic only, which errors when there is not one per item.
    pub fn forward(&self, latent: Tensor<3>, counts: &[usize]) -> TrainResult<Tensor<3>> {
        let mut x = latent;
        for conv in &self.convs {
            x = leaky_relu(conv.forward(x), 0.2);
        }
        let local = self.head.forward(x.clone());
        let Some(count) = &self.count else {
            return Ok(local);
        };
        let [b, features, _] = x.dims();
        if counts.len() != b {
            return Err(TrainError::config(
                "student.critic.conditional",
                format!("{} event counts for a batch of {b}", counts.len()),
            ));
        }
        let device = x.device();
        let rows: Vec<i64> = counts.iter().map(|&n| n.min(MAX_COUNT) as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [b]), &device);
        let embedded = count.embedding.val().select(0, rows);
        let pooled = x.mean_dim(2).reshape([b, features]);
        let hidden = leaky_relu(
            count.hidden.forward(Tensor::cat(vec![pooled, embedded], 1)),
            0.2,
        );
        let clip = count.out.forward(hidden).reshape([b, 1, 1]);
        Ok(local + clip)
    }

    /// The critic's loss: `mean softplus(-D(real)) + mean softplus(D(fake))`, both inputs
    /// detached here (so that only the critic's parameters get gradients), shape `[1]`;
    /// `counts` as in [`Critic::forward`] (a real clip and the fake of the same row share it).
    /// Returns `(loss, fraction of real logits > 0, fraction of fake logits < 0)`.
    pub fn loss(
        &self,
        real: Tensor<3>,
        fake: Tensor<3>,
        counts: &[usize],
    ) -> TrainResult<(Tensor<1>, f64, f64)> {
        let real = self.forward(real.detach(), counts)?;
        let fake = self.forward(fake.detach(), counts)?;
        let right = |t: Tensor<3>| {
            let n = t.dims().iter().product::<usize>().max(1) as f64;
            t.greater_elem(0.0).int().sum().into_scalar::<i64>() as f64 / n
        };
        let real_right = right(real.clone().detach());
        let fake_right = 1.0 - right(fake.clone().detach());
        let loss = softplus(real.neg(), 1.0).mean() + softplus(fake, 1.0).mean();
        Ok((loss, real_right, fake_right))
    }

    /// The generator's adversarial term on `x0` `[B, C, L]` (the student's output, with its
    /// gradient): `mean softplus(-D(x0))`, shape `[1]`; `counts` as in [`Critic::forward`].
    /// Evaluated through a copy of the critic that records no gradient, so the term's backward
    /// reaches only `x0`'s producer.
    pub fn generator_loss(&self, x0: Tensor<3>, counts: &[usize]) -> TrainResult<Tensor<1>> {
        let logits = self.clone().no_grad().forward(x0, counts)?;
        Ok(softplus(logits.neg(), 1.0).mean())
    }
}

/// Where the clean latents of the real clips come from: the corpus's training clips encoded by
/// the run's VAE (implemented by `teacher::TeacherStage`, which caches them).
pub trait RealLatents {
    /// Clean latents `[B, C, L]` of training clips `clips`.
    fn real_latents(&self, clips: &[u64], device: &Device) -> TrainResult<Tensor<3>>;
}

/// The critic and its optimiser, as the student stage holds them between steps.
pub struct CriticState {
    /// The critic.
    pub model: Critic,
    /// Its optimiser.
    pub optim: ModuleOptimizer,
    /// The student's recent outputs ([`CriticConfig::replay`]), oldest first.
    pub replay: ReplayRows,
}

/// The student's recent outputs the critic trains on: per row the training clip and the
/// output latent `[C, L]`, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayRows {
    /// The latent shape `[C, L]` of a row (`[0, 0]` while empty).
    pub shape: [usize; 2],
    /// The rows: training clip and latent values (row-major `[C, L]`).
    pub rows: std::collections::VecDeque<(u64, Vec<f32>)>,
}

impl ReplayRows {
    /// Appends the rows of `latents` `[B, C, L]` (training clips `clips`), then drops the
    /// oldest beyond `capacity`.
    pub fn push(&mut self, clips: &[u64], latents: Tensor<3>, capacity: usize) {
        let [b, c, l] = latents.dims();
        let values: Vec<f32> = latents
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        if self.shape != [c, l] {
            self.rows.clear();
            self.shape = [c, l];
        }
        for (j, &clip) in clips.iter().enumerate().take(b) {
            let row = values.get(j * c * l..(j + 1) * c * l).unwrap_or(&[]);
            self.rows.push_back((clip, row.to_vec()));
        }
        while self.rows.len() > capacity.max(1) {
            self.rows.pop_front();
        }
    }

    /// The rows' clips and latents `[N, C, L]` on `device`.
    pub fn batch(&self, device: &Device) -> (Vec<u64>, Tensor<3>) {
        let [c, l] = self.shape;
        let clips = self.rows.iter().map(|(clip, _)| *clip).collect();
        let values: Vec<f32> = self
            .rows
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let tensor = Tensor::from_data(TensorData::new(values, [self.rows.len(), c, l]), device);
        (clips, tensor)
    }

    /// The rows as bytes: `C`, `L`, `N` (u64 little-endian), then per row the clip (u64) and
    /// its `C x L` values (f32 little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let [c, l] = self.shape;
        let mut out = Vec::with_capacity(24 + self.rows.len() * (8 + 4 * c * l));
        for n in [c, l, self.rows.len()] {
            out.extend((n as u64).to_le_bytes());
        }
        for (clip, values) in &self.rows {
            out.extend(clip.to_le_bytes());
            for v in values {
                out.extend(v.to_le_bytes());
            }
        }
        out
    }

    /// Reads [`ReplayRows::to_bytes`]'s format; `None` for bytes of another length or form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                bytes.get(8 * i..8 * i + 8)?.try_into().ok()?,
            ))
        };
        let (c, l, n) = (
            usize::try_from(word(0)?).ok()?,
            usize::try_from(word(1)?).ok()?,
            usize::try_from(word(2)?).ok()?,
        );
        let row_bytes = c.checked_mul(l)?.checked_mul(4)?.checked_add(8)?;
        if bytes.len() != 24usize.checked_add(n.checked_mul(row_bytes)?)? {
            return None;
        }
        let rows = (0..n)
            .map(|r| {
                let at = 24 + r * row_bytes;
                let clip = u64::from_le_bytes(bytes[at..at + 8].try_into().ok()?);
                let values = bytes[at + 8..at + row_bytes]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Some((clip, values))
            })
            .collect::<Option<_>>()?;
        Some(ReplayRows {
            shape: [c, l],
            rows,
        })
    }
}

/// The checkpoints of a student stage's critic (`<stage dir>/critic/checkpoints`).
pub fn critic_checkpoints(stage_dir: &Path) -> Checkpoints {
    Checkpoints::new(&critic_dir(stage_dir))
}

/// The folder of a student stage's critic.
pub fn critic_dir(stage_dir: &Path) -> PathBuf {
    stage_dir.join("critic")
}

impl CriticState {
    /// A fresh critic (weights from `seed`) with a fresh optimiser of `settings`.
    pub fn fresh(
        config: &CriticConfig,
        channels: usize,
        seed: u64,
        settings: &LoopSettings,
        device: &Device,
    ) -> Self {
        CriticState {
            model: config.init(channels, seed, device),
            optim: optimizer(settings),
            replay: ReplayRows::default(),
        }
    }

    /// The critic of the checkpoint at `step` in `stage_dir`, `None` where the stage has no
    /// critic checkpoints at all (it ran without one so far). A critic folder that has
    /// checkpoints but not the one of `step` is an error: its critic does not belong to that
    /// step.
    pub fn load(
        stage_dir: &Path,
        step: u64,
        fresh: CriticState,
    ) -> TrainResult<Option<CriticState>> {
        let checkpoints = critic_checkpoints(stage_dir);
        checkpoints.remove_partial()?;
        let steps = checkpoints.steps()?;
        if steps.is_empty() {
            return Ok(None);
        }
        if !steps.contains(&step) {
            return Err(TrainError::checkpoint(
                checkpoints.path(step),
                format!(
                    "the student's checkpoint is at step {step} but its critic's are at steps \
                     {steps:?}; remove {} to start a fresh critic",
                    critic_dir(stage_dir).display()
                ),
            ));
        }
        let loaded = checkpoints.load(step, fresh.model, fresh.optim)?;
        let path = loaded.dir.join(REPLAY_FILE);
        let replay = match std::fs::read(&path) {
            Ok(bytes) => ReplayRows::from_bytes(&bytes).ok_or_else(|| {
                TrainError::checkpoint(&path, "corrupt: not a list of replay rows")
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ReplayRows::default(),
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        Ok(Some(CriticState {
            model: loaded.model,
            optim: loaded.optim,
            replay,
        }))
    }

    /// Saves the critic as the checkpoint of `step` in `stage_dir` (with its replay rows where
    /// it has any), keeping the newest `keep`.
    pub fn save(&self, stage_dir: &Path, step: u64, keep: usize) -> TrainResult<PathBuf> {
        let dir = critic_checkpoints(stage_dir).save(&self.model, &self.optim, step, keep)?;
        if !self.replay.rows.is_empty() {
            write_atomic(&dir.join(REPLAY_FILE), &self.replay.to_bytes())?;
        }
        Ok(dir)
    }
}
