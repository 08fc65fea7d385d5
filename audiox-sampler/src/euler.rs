//! First-order rectified-flow sampler (the base model's reference sampler).

use burn::tensor::Tensor;

use audiox_core::Result;
use audiox_core::noise::NoiseSource;

use crate::control::{StepControl, StepInfo};
use crate::denoiser::Denoiser;
use crate::guidance::{Guidance, Guided};
use crate::sampler::{Sampler, builtin_settings, prepare, velocity_at};
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

    /// The reference defaults of the base (teacher) model: 250 steps, guidance scale 6, no
    /// rescale.
    pub fn teacher() -> Self {
        Self::new(250).with_guidance(Guidance::cfg(6.0))
    }
}

builtin_settings!(Euler);

impl Sampler for Euler {
    fn name(&self) -> &str {
        "euler"
    }

    fn steps(&self) -> usize {
        self.schedule.steps()
    }

    fn guidance(&self) -> Guidance {
        self.guidance
    }

    fn validate(&self) -> Result<()> {
        self.schedule.validate()?;
        self.guidance.validate()
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        noise: Tensor<3>,
        _rng: &mut dyn NoiseSource,
        control: &mut StepControl<'_>,
    ) -> Result<Tensor<3>> {
        let times = prepare(&self.schedule, &self.guidance, &noise)?;
        let denoiser = Guided::new(denoiser, self.guidance);
        let total = times.len() - 1;
        let mut x = noise; // [B, C, L]
        for (k, pair) in times.windows(2).enumerate() {
            let (t, t_next) = (pair[0], pair[1]);
            control.check_cancelled(k, total)?;
            let v = velocity_at(&denoiser, &x, t)?;
            // Only for the progress report: the clean-latent estimate at t.
            let denoised = control
                .has_progress()
                .then(|| x.clone() - v.clone().mul_scalar(t));
            x = x + v.mul_scalar(t_next - t);
            control
                .report(&StepInfo::new(k, total, t, t_next, &x).with_denoised(denoised.as_ref()));
        }
        Ok(x)
    }
}
