//! The few-step sampler of the DMD-distilled student (AudioX-Turbo).

use burn::tensor::Tensor;

use audiox_core::Result;
use audiox_core::noise::{NoiseSource, labels};
use audiox_core::tensor::from_vec;

use crate::control::{StepControl, StepInfo};
use crate::denoiser::Denoiser;
use crate::guidance::{Guidance, Guided};
use crate::sampler::{Sampler, builtin_settings, prepare, velocity_at};
use crate::schedule::Schedule;

/// The AudioX-Turbo student sampler: predict the clean latent, re-noise it with fresh noise to
/// the next time, repeat; return the last prediction.
///
/// On the schedule `t_0 = 1 > t_1 > ... > t_N = 0` (by default `linspace(1, 0, steps + 1)`),
/// step `i` computes `v = f(z, t_i)` and `x0 = z - t_i v`; unless it is the last step it draws
/// `eps ~ N(0, I)` (label [`labels::STEP_NOISE`], the latent's shape) and sets
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
    /// The reference's number of steps.
    pub const DEFAULT_STEPS: usize = 4;

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
        rng: &mut dyn NoiseSource,
        control: &mut StepControl<'_>,
    ) -> Result<Tensor<3>> {
        let times = prepare(&self.schedule, &self.guidance, &noise)?;
        let denoiser = Guided::new(denoiser, self.guidance);
        let total = times.len() - 1;
        let shape = noise.dims();
        let device = noise.device();
        let mut z = noise; // [B, C, L]
        for (i, pair) in times.windows(2).enumerate() {
            let (t, t_next) = (pair[0], pair[1]);
            control.check_cancelled(i, total)?;
            let v = velocity_at(&denoiser, &z, t)?;
            let x0 = z - v.mul_scalar(t);
            z = if i + 1 < total {
                let eps = from_vec(rng.normal(labels::STEP_NOISE, &shape)?, shape, &device)?;
                eps.mul_scalar(t_next) + x0.clone().mul_scalar(1.0 - t_next)
            } else {
                // The last step returns its prediction; t_next is never evaluated.
                x0.clone()
            };
            control.report(&StepInfo::new(i, total, t, t_next, &z).with_denoised(Some(&x0)));
        }
        Ok(z)
    }
}
