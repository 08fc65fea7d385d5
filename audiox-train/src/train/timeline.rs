//! Timeline supervision of the teacher's conditioning (an auxiliary loss; optional).
//!
//! In this architecture the caption reaches the DiT only as one conditioning vector per
//! sequence position (`Dit::conditioning_sequence`: the fused context through
//! `proj_mm_tokens` and a fixed linear map over the token axis), which every block turns into
//! its adaLN shift, scale and gate. To make `n` events at the right places, the text encoder
//! and the fusion block must therefore write, for every latent frame, whether an event starts
//! or sounds there; the flow loss teaches that only indirectly. The demo teachers trained with
//! the flow loss alone make the right kinds of events but not their number: about a quarter of
//! captions get the right count, on training captions as on held-out ones (2026-12-03), so
//! the model is not memorising but missing the layout.
//!
//! This loss asks the first [`CHANNELS`] channels of each latent frame's conditioning vector
//! to equal the clip's event timeline, which the corpus knows exactly:
//!
//! * channel 0: a Gaussian bump (standard deviation [`ONSET_WIDTH_FRAMES`] frames, peak 1) at
//!   every onset, so that the number of bumps is the number of events;
//! * channels 1-3: 1 while an event of the class `High`, `Low` or `Noise` (the metric's
//!   classes, `metric::EventClass`) sounds, over its rendered length but at least
//!   [`MIN_ACTIVE_S`]; 0 elsewhere.
//!
//! No parameter is added: the channels are the conditioning's own, so the exported model keeps
//! the official layout, and the DiT reads the timeline through its adaLN maps as it reads any
//! channel. The term is the mean squared difference over the supervised channels and frames,
//! weighted by [`TimelineLoss::weight`] in the step's loss; without the setting (the default)
//! the teacher trains exactly as before.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::error::{TrainError, TrainResult};
use crate::corpus::RenderedEvent;
use crate::metric::EventClass;

/// Supervised channels of a latent frame's conditioning vector.
pub const CHANNELS: usize = 4;

/// Standard deviation of an onset's bump, in latent frames.
pub const ONSET_WIDTH_FRAMES: f32 = 1.0;

/// Shortest activity span, in seconds (clicks last 6 ms, under a latent frame).
pub const MIN_ACTIVE_S: f32 = 0.04;

/// The teacher's timeline loss setting (`teacher.timeline` in the run configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineLoss {
    /// Weight of the term in the step's loss (positive; 0 allowed with [`Self::oracle`]).
    pub weight: f64,
    /// A diagnostic, off by default: the flow loss sees the clip's exact timeline written
    /// into the supervised channels of its conditioning ([`with_oracle`]; rows whose
    /// condition is dropped keep their own), so that a run can tell whether the DiT renders
    /// events where it is told to. **The export of such a run cannot carry the oracle**
    /// (generation reads the layout from the caption alone): score it with the
    /// `layout_oracle` example, not as a model.
    #[serde(default, skip_serializing_if = "is_false")]
    pub oracle: bool,
    /// A diagnostic, off by default: project every target timeline onto a subspace along time
    /// first ([`TimelineBasis`], a file; a relative path is read from the run folder), for the
    /// term and the oracle alike: what a conditioning of that rank along time could carry at
    /// best (the caption reaches the positions through one fixed map from its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<std::path::PathBuf>,
    /// Steps at the start of the run that train this term alone (0, the default: none): no
    /// flow loss and no pass through the DiT's blocks, so that the text encoder, the fusion
    /// block and the conditioning maps learn to write the layout (at a small fraction of a
    /// full step's cost) before the DiT learns to read it. Logged with a `pretrain` term. The
    /// flow steps after it warm up again (the stage's `warmup`, from the first flow step), so
    /// that the fresh DiT's first, noisy gradients do not undo the layout at the full rate.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pretrain_steps: u64,
    /// Where the layout pretraining's clips come from. 0 (the default): the teacher's clip
    /// pool, with the audio prompts the flow steps use. `N > 0`: any of the first `N` training
    /// scenes, rendered as they are drawn, with the silent audio prompt (no latents are
    /// needed, so `N` may far exceed the pool: the text side then learns the layouts of `N`
    /// captions' scenes instead of the pool's few thousand). Needs `pretrain_steps`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pretrain_scenes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TimelineLoss {
    /// Checks the weight (finite; positive, or 0 with the oracle); `section` names the setting
    /// in errors.
    pub fn check(&self, section: &str) -> TrainResult<()> {
        let allowed = if self.oracle {
            self.weight >= 0.0
        } else {
            self.weight > 0.0
        };
        if self.pretrain_scenes > 0 && self.pretrain_steps == 0 {
            return Err(TrainError::config(
                section,
                "pretrain_scenes sets the layout pretraining's clips: it needs pretrain_steps",
            ));
        }
        if self.pretrain_steps > 0 && (self.oracle || self.weight <= 0.0) {
            return Err(TrainError::config(
                section,
                "pretrain_steps needs a positive weight and no oracle (the oracle replaces the \
                 layout the pretraining would teach)",
            ));
        }
        if !(self.weight.is_finite() && allowed) {
            return Err(TrainError::config(
                section,
                format!(
                    "weight {} must be finite and positive (or 0 with the oracle)",
                    self.weight
                ),
            ));
        }
        Ok(())
    }
}

/// The timeline of one clip's rendered `events` over `frames` latent frames of `frame_s`
/// seconds each: `frames x CHANNELS` values, frame-major (see the module docs).
pub fn timeline(events: &[RenderedEvent], frames: usize, frame_s: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; frames * CHANNELS];
    if frame_s <= 0.0 {
        return out;
    }
    for e in events {
        let onset = e.onset_s / frame_s;
        for (f, row) in out.chunks_mut(CHANNELS).enumerate() {
            let d = (f as f32 - onset) / ONSET_WIDTH_FRAMES;
            row[0] = row[0].max((-0.5 * d * d).exp());
        }
        let end = (e.onset_s + e.duration_s.max(MIN_ACTIVE_S)) / frame_s;
        let first = onset.floor().max(0.0) as usize;
        // Frames `first..last` overlap the event (an end on a frame's edge, up to rounding,
        // does not reach into the next frame).
        let last = ((end - 1e-3).ceil().max(0.0) as usize).min(frames);
        for class in EventClass::expected(e.kind, e.pitch) {
            let channel = match class {
                EventClass::High => 1,
                EventClass::Low => 2,
                EventClass::Noise => 3,
            };
            for row in out.chunks_mut(CHANNELS).take(last).skip(first) {
                row[channel] = 1.0;
            }
        }
    }
    out
}

/// The timelines of a batch as a tensor `[B, frames, CHANNELS]` on `device`.
pub fn timeline_batch(
    events: &[&[RenderedEvent]],
    frames: usize,
    frame_s: f32,
    device: &burn::tensor::Device,
) -> Tensor<3> {
    timeline_batch_projected(events, frames, frame_s, None, device)
}

/// [`timeline_batch`], each timeline projected onto `basis` when one is given (its frame
/// count must be `frames`).
pub fn timeline_batch_projected(
    events: &[&[RenderedEvent]],
    frames: usize,
    frame_s: f32,
    basis: Option<&TimelineBasis>,
    device: &burn::tensor::Device,
) -> Tensor<3> {
    let values: Vec<f32> = events
        .iter()
        .flat_map(|e| {
            let mut t = timeline(e, frames, frame_s);
            if let Some(basis) = basis {
                basis.project(&mut t);
            }
            t
        })
        .collect();
    Tensor::from_data(
        TensorData::new(values, [events.len(), frames, CHANNELS]),
        device,
    )
}

/// The timeline term: mean squared difference between the first [`CHANNELS`] channels of the
/// latent frames' conditioning vectors (`sequence` `[B, 1 + frames, E]`, position 0 the time
/// token's, left out) and `targets` `[B, frames, CHANNELS]`. Fails when the shapes do not fit.
pub fn timeline_loss(sequence: Tensor<3>, targets: Tensor<3>) -> TrainResult<Tensor<1>> {
    let [b, positions, width] = sequence.dims();
    let [tb, frames, channels] = targets.dims();
    if tb != b || positions != frames + 1 || width < channels {
        return Err(TrainError::config(
            "teacher.timeline",
            format!(
                "conditioning [{b}, {positions}, {width}] does not fit timelines [{tb}, {frames}, {channels}]"
            ),
        ));
    }
    let supervised = sequence.narrow(1, 1, frames).narrow(2, 0, channels);
    Ok((supervised - targets).powi_scalar(2).mean())
}

/// The conditioning `sequence` `[B, 1 + frames, E]` with the first [`CHANNELS`] channels of
/// every latent frame (position 0, the time token's, left alone) replaced by `targets`
/// `[B, frames, CHANNELS]` in the rows where `kept[row]`; the other rows unchanged. The layout
/// oracle of [`TimelineLoss::oracle`] and of the `layout_oracle` example. Fails when the
/// shapes do not fit.
pub fn with_oracle(
    sequence: Tensor<3>,
    targets: Tensor<3>,
    kept: &[bool],
) -> TrainResult<Tensor<3>> {
    let [b, positions, width] = sequence.dims();
    let [tb, frames, channels] = targets.dims();
    if tb != b || kept.len() != b || positions != frames + 1 || width < channels {
        return Err(TrainError::config(
            "teacher.timeline",
            format!(
                "conditioning [{b}, {positions}, {width}] does not fit timelines [{tb}, {frames}, {channels}] with {} row flags",
                kept.len()
            ),
        ));
    }
    let device = sequence.device();
    let mut mask = vec![0.0f32; b * positions * width];
    for (row, _) in kept.iter().enumerate().filter(|(_, k)| **k) {
        for p in 1..positions {
            let at = (row * positions + p) * width;
            mask[at..at + channels].fill(1.0);
        }
    }
    let mask = Tensor::<3>::from_data(TensorData::new(mask, [b, positions, width]), &device);
    // The targets at their positions, zero elsewhere.
    let placed = Tensor::cat(
        vec![Tensor::<3>::zeros([b, 1, channels], &device), targets],
        1,
    );
    let placed = if width > channels {
        Tensor::cat(
            vec![
                placed,
                Tensor::<3>::zeros([b, positions, width - channels], &device),
            ],
            2,
        )
    } else {
        placed
    };
    Ok(sequence * (mask.clone().neg() + 1.0) + placed * mask)
}

/// A subspace along time for the timelines (diagnostics: [`TimelineLoss::basis`], the
/// `layout_oracle` example): a mean timeline per channel and `k` orthonormal rows of `frames`
/// values shared by the channels; [`TimelineBasis::project`] maps each channel `x` to
/// `mean + B^T B (x - mean)`.
///
/// File format (little-endian f32): `k`, `frames`, the means (`CHANNELS x frames`,
/// channel-major), then the rows (`k x frames`). `docs/training.md` has the numpy lines that
/// write one from `timeline_dump`'s output (the best subspace of the corpus's timelines).
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineBasis {
    frames: usize,
    means: Vec<f32>,
    rows: Vec<Vec<f32>>,
}

impl TimelineBasis {
    /// Builds a basis; fails unless `means` holds `CHANNELS x frames` values and every row
    /// `frames` (rows are used as given: orthonormal rows make the map a projection).
    pub fn new(frames: usize, means: Vec<f32>, rows: Vec<Vec<f32>>) -> TrainResult<Self> {
        if frames == 0
            || means.len() != CHANNELS * frames
            || rows.is_empty()
            || rows.iter().any(|r| r.len() != frames)
            || means
                .iter()
                .chain(rows.iter().flatten())
                .any(|v| !v.is_finite())
        {
            return Err(TrainError::config(
                "teacher.timeline.basis",
                format!(
                    "needs {CHANNELS} x {frames} finite means and at least one row of {frames} finite values"
                ),
            ));
        }
        Ok(TimelineBasis {
            frames,
            means,
            rows,
        })
    }

    /// Reads the file format above.
    pub fn read(path: &std::path::Path) -> TrainResult<Self> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let bad = |why: String| {
            TrainError::config(
                "teacher.timeline.basis",
                format!("{}: {why}", path.display()),
            )
        };
        if bytes.len() % 4 != 0 {
            return Err(bad(format!(
                "{} bytes is not a whole number of f32",
                bytes.len()
            )));
        }
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (k, frames) = match v.as_slice() {
            [k, f, ..]
                if k.fract() == 0.0
                    && f.fract() == 0.0
                    && *k >= 1.0
                    && *f >= 1.0
                    && *k <= 1e6
                    && *f <= 1e6 =>
            {
                (*k as usize, *f as usize)
            }
            _ => return Err(bad("no valid header (k, frames)".into())),
        };
        if v.len() != 2 + (CHANNELS + k) * frames {
            return Err(bad(format!(
                "{} values, {} expected for k {k} and {frames} frames",
                v.len(),
                2 + (CHANNELS + k) * frames
            )));
        }
        let means = v[2..2 + CHANNELS * frames].to_vec();
        let rows = v[2 + CHANNELS * frames..]
            .chunks(frames)
            .map(<[f32]>::to_vec)
            .collect();
        Self::new(frames, means, rows)
    }

    /// Frames per timeline.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Rows (the subspace's dimension).
    pub fn rank(&self) -> usize {
        self.rows.len()
    }

    /// Projects a frame-major timeline (`frames x CHANNELS` values, as [`timeline`] returns)
    /// in place. A timeline of another length is left as it is.
    pub fn project(&self, timeline: &mut [f32]) {
        if timeline.len() != self.frames * CHANNELS {
            return;
        }
        for c in 0..CHANNELS {
            let mean = &self.means[c * self.frames..(c + 1) * self.frames];
            let x: Vec<f32> = (0..self.frames)
                .map(|f| timeline[f * CHANNELS + c] - mean[f])
                .collect();
            let mut p = mean.to_vec();
            for row in &self.rows {
                let dot: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
                for (pf, r) in p.iter_mut().zip(row) {
                    *pf += dot * r;
                }
            }
            for (f, v) in p.into_iter().enumerate() {
                timeline[f * CHANNELS + c] = v;
            }
        }
    }
}
