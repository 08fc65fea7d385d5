//! DPM-Solver++(2M) for rectified flow.

use burn::tensor::Tensor;

use audiox_core::Result;

use crate::driver::Step;
use crate::guidance::Guidance;
use crate::sampler::{Sampler, builtin_settings};
use crate::schedule::Schedule;

/// DPM-Solver++(2M): a second-order multistep exponential integrator in data prediction,
/// written for rectified flow.
///
/// Rectified flow is the diffusion `z_t = alpha_t x0 + sigma_t eps` with `alpha_t = 1 - t`,
/// `sigma_t = t`, half-log-SNR `lambda(t) = ln((1 - t) / t)`, and the clean-latent prediction
/// `x0 = z - t v`. From `t` to `s < t`, with `h = lambda(s) - lambda(t)`, the update is
///
/// ```text
/// z_s = (s / t) z_t + alpha_s (1 - e^-h) D,   alpha_s (1 - e^-h) = (1 - s) - s (1 - t) / t
/// D   = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev,   r = h_prev / h
/// ```
///
/// where `h_prev` is the previous step's `h` and `x0_prev` its prediction: one evaluation per
/// step, global error `O(1/N^2)`. The coefficients are computed in f64 in the ratio form above,
/// which stays finite at the endpoints:
/// * at `t = 1` (`lambda = -inf`) the update is the exact first-order one (`D = x0`), and so is
///   the step after it (`h_prev` infinite, the limit `r -> inf` gives `D = x0`);
/// * a step into `t = 0` (`lambda = +inf`) returns the clean-latent prediction with `D = x0`
///   (the second-order weight `1/(2r)` would be infinite), as k-diffusion's 2M does for its
///   last step.
///
/// ```
/// use audiox_sampler::{DpmPp2M, Sampler};
///
/// let solver = DpmPp2M::new(12);
/// assert_eq!((solver.name(), solver.steps(), solver.evaluations()), ("dpmpp-2m", 12, 12));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DpmPp2M {
    schedule: Schedule,
    guidance: Guidance,
}

impl DpmPp2M {
    /// `steps` linear steps from 1 to 0, no guidance.
    pub fn new(steps: usize) -> Self {
        DpmPp2M {
            schedule: Schedule::linear(steps),
            guidance: Guidance::none(),
        }
    }
}

builtin_settings!(DpmPp2M);

/// Half-log-SNR of rectified flow, `ln((1 - t) / t)`: `-inf` at `t = 1`, `+inf` at `t = 0`.
fn lambda(t: f64) -> f64 {
    ((1.0 - t) / t).ln()
}

impl Sampler for DpmPp2M {
    fn name(&self) -> &str {
        "dpmpp-2m"
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn guidance(&self) -> Guidance {
        self.guidance
    }

    fn step(&self, z: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>> {
        let (t, t_next) = (step.t(), step.t_next());
        let v = step.velocity(&z, t)?;
        let x0 = z.clone() - v.mul_scalar(t);
        let (t64, s64) = (t as f64, t_next as f64);
        let z = if t_next == 0.0 {
            x0.clone()
        } else {
            // t > t_next > 0 here, so every ratio is finite.
            let h = lambda(s64) - lambda(t64);
            let keep = s64 / t64;
            let gain = (1.0 - s64) - s64 * (1.0 - t64) / t64;
            // The previous step's log-SNR step `h_prev` and clean-latent prediction.
            let previous = step
                .previous_denoised()
                .map(|(t_prev, x0_prev)| (lambda(t64) - lambda(t_prev as f64), x0_prev));
            let d = match previous {
                Some((h_prev, x0_prev)) if h_prev.is_finite() => {
                    let w = h / (2.0 * h_prev); // 1 / (2r)
                    x0.clone().mul_scalar((1.0 + w) as f32) - x0_prev.clone().mul_scalar(w as f32)
                }
                _ => x0.clone(),
            };
            z.mul_scalar(keep as f32) + d.mul_scalar(gain as f32)
        };
        step.set_denoised(x0);
        Ok(z)
    }
}
