//! Second-order (Heun / explicit trapezoid) rectified-flow sampler.

use burn::tensor::Tensor;

use audiox_core::Result;

use crate::driver::Step;
use crate::guidance::Guidance;
use crate::sampler::{Sampler, builtin_settings};
use crate::schedule::Schedule;

/// Heun's method on the flow ODE: an Euler predictor `x' = x + dt v(x, t_k)`, then the
/// trapezoid corrector `x += dt (v(x, t_k) + v(x', t_{k+1})) / 2` with `dt = t_{k+1} - t_k`.
/// Two evaluations per step (the corrector also runs on the step into `t = 0`: a
/// rectified-flow velocity is defined there); global error `O(1/N^2)`.
///
/// ```
/// use audiox_sampler::{Heun, Sampler};
///
/// let heun = Heun::new(25);
/// assert_eq!((heun.name(), heun.steps(), heun.evaluations()), ("heun", 25, 50));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Heun {
    schedule: Schedule,
    guidance: Guidance,
}

impl Heun {
    /// `steps` linear steps from 1 to 0, no guidance.
    pub fn new(steps: usize) -> Self {
        Heun {
            schedule: Schedule::linear(steps),
            guidance: Guidance::none(),
        }
    }
}

builtin_settings!(Heun);

impl Sampler for Heun {
    fn name(&self) -> &str {
        "heun"
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn guidance(&self) -> Guidance {
        self.guidance
    }

    fn evaluations_per_step(&self) -> usize {
        2
    }

    fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>> {
        let (t, t_next) = (step.t(), step.t_next());
        let dt = t_next - t;
        let v = step.velocity(&x, t)?;
        let predictor = x.clone() + v.clone().mul_scalar(dt);
        let v_next = step.velocity(&predictor, t_next)?;
        if step.wants_denoised() {
            step.set_denoised(x.clone() - v.clone().mul_scalar(t));
        }
        Ok(x + (v + v_next).mul_scalar(0.5 * dt))
    }
}
