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
    let values: Vec<f32> = events
        .iter()
        .flat_map(|e| timeline(e, frames, frame_s))
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
