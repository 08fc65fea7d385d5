//! First-order rectified-flow sampler (the base model's reference sampler).

use burn::tensor::Tensor;

use audiox_core::Result;

use crate::driver::Step;
use crate::guidance::Guidance;
use crate::sampler::{Sampler, builtin_settings};
use crate::schedule::Schedule;

/// Euler integration of the flow ODE `dx/dt = v(x, t)` from the schedule's first time to its
/// last: `x += (t_{k+1} - t_k) * v(x, t_k)`, returning `x` at the last time (no final
/// clean-latent prediction). One (guided) evaluation per step; global error `O(1/N)`.
///
/// This is the reference's teacher sampler (`sample_discrete_euler`): 250 linear steps from 1
/// and guidance scale 6 by default there ([`Euler::teacher`]). The reference runs it under
/// FP16 autocast on CUDA; this implementation is f32 throughout, like the fixtures.
///
/// ```
/// use audiox_sampler::{Euler, Guidance, Sampler};
///
/// let euler = Euler::new(50).with_guidance(Guidance::cfg(6.0));
/// assert_eq!((euler.name(), euler.steps(), euler.evaluations()), ("euler", 50, 50));
/// assert_eq!(Euler::teacher().guidance(), Guidance::cfg(6.0));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Euler {
    schedule: Schedule,
    guidance: Guidance,
}

impl Euler {
    /// `steps` linear steps from 1 to 0, no guidance.
    pub fn new(steps: usize) -> Self {
        Euler {
            schedule: Schedule::linear(steps),
            guidance: Guidance::none(),
        }
    }

    /// The reference defaults of the base (teacher) model
    /// ([`Defaults::TEACHER`](crate::Defaults::TEACHER)): 250 steps, guidance scale 6, no
    /// rescale.
    pub fn teacher() -> Self {
        let d = crate::Defaults::TEACHER;
        Self::new(d.steps).with_guidance(d.guidance)
    }
}

builtin_settings!(Euler);

impl Sampler for Euler {
    fn name(&self) -> &str {
        "euler"
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn guidance(&self) -> Guidance {
        self.guidance
    }

    fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>> {
        let (t, t_next) = (step.t(), step.t_next());
        let v = step.velocity(&x, t)?;
        if step.wants_denoised() {
            // Only for the progress report: the clean-latent estimate at t.
            step.set_denoised(x.clone() - v.clone().mul_scalar(t));
        }
        Ok(x + v.mul_scalar(t_next - t))
    }
}
