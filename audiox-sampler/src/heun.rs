//! Second-order (Heun / explicit trapezoid) rectified-flow sampler.

use burn::tensor::Tensor;

use audiox_core::Result;
use audiox_core::noise::NoiseSource;

use crate::control::{StepControl, StepInfo};
use crate::denoiser::Denoiser;
use crate::guidance::{Guidance, Guided};
use crate::sampler::{Sampler, builtin_settings, prepare, velocity_at};
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

    fn steps(&self) -> usize {
        self.schedule.steps()
    }

    fn evaluations(&self) -> usize {
        2 * self.steps()
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
            let dt = t_next - t;
            control.check_cancelled(k, total)?;
            let v = velocity_at(&denoiser, &x, t)?;
            let predictor = x.clone() + v.clone().mul_scalar(dt);
            let v_next = velocity_at(&denoiser, &predictor, t_next)?;
            let denoised = control
                .has_progress()
                .then(|| x.clone() - v.clone().mul_scalar(t));
            x = x + (v + v_next).mul_scalar(0.5 * dt);
            control
                .report(&StepInfo::new(k, total, t, t_next, &x).with_denoised(denoised.as_ref()));
        }
        Ok(x)
    }
}
