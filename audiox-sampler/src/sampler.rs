//! The [`Sampler`] trait: a sampler is its update rule; the loop is [`drive`](crate::drive).

use std::fmt::Debug;
use std::sync::Arc;

use burn::tensor::Tensor;

use audiox_core::noise::NoiseSource;
use audiox_core::{Error, Result};

use crate::control::StepControl;
use crate::denoiser::Denoiser;
use crate::driver::{Step, drive};
use crate::guidance::Guidance;
use crate::schedule::Schedule;

/// Turns noise into a clean latent by calling a [`Denoiser`].
///
/// A sampler is its settings ([`schedule`](Self::schedule), [`guidance`](Self::guidance)) and
/// its update rule ([`step`](Self::step)). The loop around the rule is written once, in
/// [`drive`](crate::drive), which [`sample`](Self::sample) runs: it validates the settings
/// and the latent, wraps the denoiser in classifier-free guidance, walks the schedule's
/// windows, checks cancellation before each step, checks the shape of each step's result and
/// the finiteness of the last, and reports progress after each step. This is the split of
/// diffusers' schedulers and k-diffusion's samplers.
///
/// The trait is object safe: pipelines hold an `Arc<dyn Sampler>`, and a researcher's own
/// sampler (a few lines, see the crate docs) plugs in next to the built-ins [`Dmd`](crate::Dmd),
/// [`Euler`](crate::Euler), [`Heun`](crate::Heun) and [`DpmPp2M`](crate::DpmPp2M).
pub trait Sampler: Debug + Send + Sync {
    /// A short name (`"dmd"`, `"euler"`, ...).
    fn name(&self) -> &str;

    /// The times the sampler visits, first (noisiest) to last.
    fn schedule(&self) -> &Schedule;

    /// The guidance the sampler applies (none by default). The driver wraps the denoiser in
    /// it; pipelines read it to prepare (or refuse) an unconditional branch before any compute.
    fn guidance(&self) -> Guidance {
        Guidance::none()
    }

    /// Denoiser calls per step (a guided call counts once: the denoiser batches both
    /// branches).
    fn evaluations_per_step(&self) -> usize {
        1
    }

    /// Number of steps the sampler runs (what progress reports count).
    fn steps(&self) -> usize {
        self.schedule().steps()
    }

    /// Denoiser calls per run.
    fn evaluations(&self) -> usize {
        self.steps().saturating_mul(self.evaluations_per_step())
    }

    /// Refuses settings the sampler cannot run (no steps, a bad schedule or guidance), before
    /// any compute. The driver calls it first; override it to add checks of your own.
    fn validate(&self) -> Result<()> {
        self.schedule().validate()?;
        self.guidance().validate()
    }

    /// The update rule: the state after the step described by `step`, from the state `x`
    /// `[B, C, L]` at time [`step.t()`](Step::t). Evaluate the (guided) denoiser with
    /// [`Step::velocity`], draw fresh noise with [`Step::noise`], and hand the step's
    /// clean-latent estimate to [`Step::set_denoised`] when there is one.
    fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>>;

    /// Samples from `noise` `[B, C, L]` (the state at the schedule's first time) and returns
    /// the clean latent `[B, C, L]`: runs [`drive`](crate::drive). Keep this default; a
    /// sampler that cannot be written as a [`step`](Self::step) rule (adaptive step sizes) may
    /// replace it, and must then keep the driver's contract itself.
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        noise: Tensor<3>,
        rng: &mut dyn NoiseSource,
        control: &mut StepControl<'_>,
    ) -> Result<Tensor<3>> {
        drive(self, denoiser, noise, rng, control)
    }
}

macro_rules! forward_sampler {
    ($($ptr:ty),*) => {$(
        impl<S: Sampler + ?Sized> Sampler for $ptr {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn schedule(&self) -> &Schedule {
                (**self).schedule()
            }
            fn guidance(&self) -> Guidance {
                (**self).guidance()
            }
            fn evaluations_per_step(&self) -> usize {
                (**self).evaluations_per_step()
            }
            fn steps(&self) -> usize {
                (**self).steps()
            }
            fn evaluations(&self) -> usize {
                (**self).evaluations()
            }
            fn validate(&self) -> Result<()> {
                (**self).validate()
            }
            fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>> {
                (**self).step(x, step)
            }
            fn sample(
                &self,
                denoiser: &dyn Denoiser,
                noise: Tensor<3>,
                rng: &mut dyn NoiseSource,
                control: &mut StepControl<'_>,
            ) -> Result<Tensor<3>> {
                (**self).sample(denoiser, noise, rng, control)
            }
        }
    )*};
}

forward_sampler!(&S, Box<S>, Arc<S>);

/// Evaluates `denoiser` at `x` `[B, C, L]` and time `t` (fed as a `[B]` f32 tensor filled with
/// `t`), and checks that the velocity has the shape of `x`. (Inside a step rule,
/// [`Step::velocity`] does this with the run's guided denoiser.)
pub fn velocity_at(denoiser: &dyn Denoiser, x: &Tensor<3>, t: f32) -> Result<Tensor<3>> {
    let dims = x.dims();
    let time = Tensor::<1>::full([dims[0]], t, &x.device());
    let v = denoiser.velocity(x.clone(), time)?;
    check_velocity("denoiser velocity", &dims, &v)?;
    Ok(v)
}

/// Refuses an empty latent (`B`, `C` or `L` of 0) before any compute.
pub fn check_latent(noise: &Tensor<3>) -> Result<()> {
    let dims = noise.dims();
    if dims.contains(&0) {
        return Err(Error::input_shape(
            "sampler noise",
            "[B, C, L] with B, C, L >= 1",
            &dims,
        ));
    }
    Ok(())
}

/// `Error::InputShape` unless `v` has the shape `dims` of the latent it was computed for.
pub(crate) fn check_velocity(what: &str, dims: &[usize; 3], v: &Tensor<3>) -> Result<()> {
    if v.dims() != *dims {
        return Err(Error::input_shape(what, format!("{dims:?}"), &v.dims()));
    }
    Ok(())
}

/// The builder methods every built-in (fields `schedule` and `guidance`) shares.
macro_rules! builtin_settings {
    ($ty:ident) => {
        impl $ty {
            /// The same sampler on another time schedule.
            pub fn with_schedule(mut self, schedule: $crate::Schedule) -> Self {
                self.schedule = schedule;
                self
            }

            /// The same sampler with classifier-free guidance.
            pub fn with_guidance(mut self, guidance: $crate::Guidance) -> Self {
                self.guidance = guidance;
                self
            }
        }
    };
}
pub(crate) use builtin_settings;
