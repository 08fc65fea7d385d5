//! The few-step sampler of the DMD-distilled student (AudioX-Turbo).

use burn::tensor::Tensor;

use audiox_core::Result;

use crate::driver::Step;
use crate::guidance::Guidance;
use crate::sampler::{Sampler, builtin_settings};
use crate::schedule::Schedule;

/// The AudioX-Turbo student sampler: predict the clean latent, re-noise it with fresh noise to
/// the next time, repeat; return the last prediction.
///
/// On the schedule `t_0 = 1 > t_1 > ... > t_N = 0` (by default `linspace(1, 0, steps + 1)`),
/// step `i` computes `v = f(z, t_i)` and `x0 = z - t_i v`; unless it is the last step it draws
/// `eps ~ N(0, I)` (label `labels::STEP_NOISE`, the latent's shape) and sets
/// `z = t_{i+1} eps + (1 - t_{i+1}) x0`. The result is the last `x0`, so the schedule's final
/// time is never evaluated. `N` evaluations, `N - 1` noise draws. The reference runs 4 steps
/// without guidance.
///
/// ```
/// use audiox_sampler::{Dmd, Sampler, Schedule};
///
/// let dmd = Dmd::default();
/// assert_eq!((dmd.name(), dmd.steps()), ("dmd", 4));
/// assert_eq!(dmd.schedule(), &Schedule::linear(4));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dmd {
    schedule: Schedule,
    guidance: Guidance,
}

impl Dmd {
    /// The reference's number of steps ([`Defaults::STUDENT`](crate::Defaults::STUDENT)).
    pub const DEFAULT_STEPS: usize = crate::Defaults::STUDENT.steps;

    /// `steps` linear steps from 1 to 0, no guidance.
    pub fn new(steps: usize) -> Self {
        Dmd {
            schedule: Schedule::linear(steps),
            guidance: Guidance::none(),
        }
    }
}

impl Default for Dmd {
    fn default() -> Self {
        Self::new(Self::DEFAULT_STEPS)
    }
}

builtin_settings!(Dmd);

impl Sampler for Dmd {
    fn name(&self) -> &str {
        "dmd"
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
        let x0 = z - v.mul_scalar(t);
        let z = if step.is_last() {
            // The last step returns its prediction; t_next is never evaluated.
            x0.clone()
        } else {
            let eps = step.noise()?;
            eps.mul_scalar(t_next) + x0.clone().mul_scalar(1.0 - t_next)
        };
        step.set_denoised(x0);
        Ok(z)
    }
}
