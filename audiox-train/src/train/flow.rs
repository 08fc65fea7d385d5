//! The rectified-flow objective of the teacher (the building block of the DiT + MAF stage).
//!
//! The reference's convention (`docs/reference-model.md`, section 6, and `audiox-sampler`):
//! `z_t = (1 - t) x0 + t eps` with `t = 1` pure noise, the network predicts the velocity
//! `v = eps - x0` (so `x0 = z_t - t v`). Condition dropout for classifier-free guidance zeroes a
//! row's whole post-MAF context, the null condition the reference's CFG uses
//! (`zeros_like(ctx)`). Times are drawn logit-normal (`sigmoid(N(0, 1))`) or uniform; which of
//! the two the official training used is not checked here.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use audiox_mmdit::{Dit, PreparedConditioning};

use super::error::TrainResult;
use super::stage::StepLoss;

/// How training times are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSampler {
    /// `t = sigmoid(n)`, `n ~ N(0, 1)`: more weight on mid-range times.
    LogitNormal,
    /// `t ~ U(0, 1)`.
    Uniform,
}

/// Uniform in (0, 1), 24 random bits.
fn unit(rng: &mut ChaCha8Rng) -> f32 {
    ((rng.next_u32() >> 8) as f32 + 0.5) / (1u32 << 24) as f32
}

/// `n` standard normal values (Box-Muller).
pub fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2) = (unit(rng), unit(rng));
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

/// One batch of the flow objective: the noisy latent, its times and the target velocity.
#[derive(Clone, Debug)]
pub struct FlowBatch {
    /// `z_t = (1 - t) x0 + t eps`, `[B, C, L]`.
    pub z_t: Tensor<3>,
    /// Times `[B]` in (0, 1).
    pub t: Tensor<1>,
    /// Target velocity `eps - x0`, `[B, C, L]`.
    pub target: Tensor<3>,
    /// Per row: whether its condition is dropped (`[B]`, 1 = dropped).
    pub dropped: Vec<bool>,
}

/// Draws times, noise and the condition-dropout rows for clean latents `x0` `[B, C, L]` from
/// `rng` (in that order: times, noise, dropout).
pub fn flow_batch(
    x0: Tensor<3>,
    sampler: TimeSampler,
    dropout: f64,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> FlowBatch {
    let dims = x0.dims();
    let b = dims[0];
    let times: Vec<f32> = match sampler {
        TimeSampler::LogitNormal => normals(rng, b)
            .into_iter()
            .map(|n| 1.0 / (1.0 + (-n).exp()))
            .collect(),
        TimeSampler::Uniform => (0..b).map(|_| unit(rng)).collect(),
    };
    let eps = normals(rng, dims.iter().product());
    let dropped: Vec<bool> = (0..b).map(|_| (unit(rng) as f64) < dropout).collect();
    let t = Tensor::<1>::from_data(TensorData::new(times, [b]), device);
    let eps = Tensor::<3>::from_data(TensorData::new(eps, dims), device);
    let t3 = t.clone().reshape([b, 1, 1]);
    let z_t = x0.clone() * (t3.clone().neg() + 1.0) + eps.clone() * t3;
    FlowBatch {
        z_t,
        t,
        target: eps - x0,
        dropped,
    }
}

/// The context with the dropped rows zeroed: `[B, N, D]`.
pub fn drop_condition(context: Tensor<3>, dropped: &[bool]) -> Tensor<3> {
    let [b, _, _] = context.dims();
    let keep: Vec<f32> = dropped.iter().map(|&d| if d { 0.0 } else { 1.0 }).collect();
    let keep = Tensor::<3>::from_data(TensorData::new(keep, [b, 1, 1]), &context.device());
    context * keep
}

/// The flow-matching loss of `dit` on clean latents `x0` `[B, C, L]` with the post-MAF
/// `context` `[B, N, D]`: mean squared error between the predicted and the target velocity.
pub fn flow_loss(
    dit: &Dit,
    x0: Tensor<3>,
    context: Tensor<3>,
    sampler: TimeSampler,
    dropout: f64,
    rng: &mut ChaCha8Rng,
) -> TrainResult<StepLoss> {
    flow_loss_conditioned(dit, x0, sampler, dropout, rng, |dropped| {
        Ok(dit.prepare(drop_condition(context, dropped))?)
    })
}

/// [`flow_loss`] with the conditioning built by `condition` from the batch's dropped rows
/// (`true`: the row's condition is dropped), e.g. from a conditioning sequence changed
/// after the context (`Dit::prepare_sequence`). Draws from `rng` as [`flow_loss`] does.
pub fn flow_loss_conditioned(
    dit: &Dit,
    x0: Tensor<3>,
    sampler: TimeSampler,
    dropout: f64,
    rng: &mut ChaCha8Rng,
    condition: impl FnOnce(&[bool]) -> TrainResult<PreparedConditioning>,
) -> TrainResult<StepLoss> {
    let device = x0.device();
    let batch = flow_batch(x0, sampler, dropout, rng, &device);
    let prepared = condition(&batch.dropped)?;
    let v = dit.forward(batch.z_t, batch.t, &prepared)?;
    let loss = (v - batch.target).powi_scalar(2).mean();
    let value = loss.clone().into_scalar::<f32>() as f64;
    let dropped = batch.dropped.iter().filter(|&&d| d).count() as f64;
    Ok(StepLoss {
        loss,
        terms: BTreeMap::from([
            ("flow_mse".to_string(), value),
            ("dropped".to_string(), dropped),
        ]),
    })
}
