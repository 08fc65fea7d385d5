//! The [`Sampler`] trait and the helpers every sampler uses.

use std::fmt::Debug;
use std::sync::Arc;

use burn::tensor::Tensor;

use audiox_core::noise::NoiseSource;
use audiox_core::{Error, Result};

use crate::control::StepControl;
use crate::denoiser::Denoiser;
use crate::guidance::Guidance;
use crate::schedule::Schedule;

/// Turns noise into a clean latent by calling a [`Denoiser`].
///
/// The trait is object safe: pipelines hold a `Box<dyn Sampler>`, and a researcher's own
/// sampler plugs in next to the built-ins. An implementation should
/// * draw every random number from `rng` (label [`labels::STEP_NOISE`] for per-step noise),
///   so a seed reproduces the run;
/// * call [`StepControl::check_cancelled`] before each step and [`StepControl::report`] after
///   it, and return nothing but the error when cancelled;
/// * evaluate the denoiser through [`velocity_at`] (time tensor `[B]`, shape check), wrapped
///   in [`Guided`](crate::Guided) when it supports guidance.
///
/// The built-ins are [`Dmd`](crate::Dmd), [`Euler`](crate::Euler), [`Heun`](crate::Heun) and
/// [`DpmPp2M`](crate::DpmPp2M). See the crate docs for a sampler written outside the crate.
///
/// [`labels::STEP_NOISE`]: audiox_core::noise::labels::STEP_NOISE
pub trait Sampler: Debug + Send + Sync {
    /// A short name (`"dmd"`, `"euler"`, ...).
    fn name(&self) -> &str;

    /// Number of steps the sampler runs (what progress reports count).
    fn steps(&self) -> usize;

    /// Denoiser calls per run (a guided call counts once: the denoiser batches both branches).
    fn evaluations(&self) -> usize {
        self.steps()
    }

    /// The guidance the sampler applies (none by default). Pipelines read it to refuse a guided
    /// request on a model without an unconditional branch before any compute.
    fn guidance(&self) -> Guidance {
        Guidance::none()
    }

    /// Refuses settings the sampler cannot run (no steps, a bad schedule or guidance), before
    /// any compute. [`sample`](Self::sample) calls it too.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Samples from `noise` `[B, C, L]` (the state at the schedule's first time) and returns
    /// the clean latent `[B, C, L]`.
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        noise: Tensor<3>,
        rng: &mut dyn NoiseSource,
        control: &mut StepControl<'_>,
    ) -> Result<Tensor<3>>;
}

macro_rules! forward_sampler {
    ($($ptr:ty),*) => {$(
        impl<S: Sampler + ?Sized> Sampler for $ptr {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn steps(&self) -> usize {
                (**self).steps()
            }
            fn evaluations(&self) -> usize {
                (**self).evaluations()
            }
            fn guidance(&self) -> Guidance {
                (**self).guidance()
            }
            fn validate(&self) -> Result<()> {
                (**self).validate()
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

/// Names accepted by [`by_name`].
pub const BUILTIN_SAMPLERS: &[&str] = &["dmd", "euler", "heun", "dpmpp-2m"];

/// A built-in sampler by name (see [`BUILTIN_SAMPLERS`]) with `steps` linear steps from 1 to 0
/// and `guidance`.
///
/// ```
/// use audiox_sampler::{by_name, Guidance, Sampler};
///
/// let s = by_name("heun", 10, Guidance::cfg(4.0))?;
/// assert_eq!((s.name(), s.steps(), s.evaluations()), ("heun", 10, 20));
/// assert!(by_name("ddim", 10, Guidance::none()).is_err());
/// # Ok::<(), audiox_core::Error>(())
/// ```
pub fn by_name(name: &str, steps: usize, guidance: Guidance) -> Result<Box<dyn Sampler>> {
    let sampler: Box<dyn Sampler> = match name {
        "dmd" => Box::new(crate::Dmd::new(steps).with_guidance(guidance)),
        "euler" => Box::new(crate::Euler::new(steps).with_guidance(guidance)),
        "heun" => Box::new(crate::Heun::new(steps).with_guidance(guidance)),
        "dpmpp-2m" => Box::new(crate::DpmPp2M::new(steps).with_guidance(guidance)),
        other => {
            return Err(Error::InvalidRequest(format!(
                "unknown sampler `{other}`; the built-in samplers are {}",
                BUILTIN_SAMPLERS.join(", ")
            )));
        }
    };
    Ok(sampler)
}

/// Evaluates `denoiser` at `x` `[B, C, L]` and time `t` (fed as a `[B]` f32 tensor filled with
/// `t`), and checks that the velocity has the shape of `x`.
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

/// The checks every built-in runs before any compute; returns the time grid.
pub(crate) fn prepare(
    schedule: &Schedule,
    guidance: &Guidance,
    noise: &Tensor<3>,
) -> Result<Vec<f32>> {
    let times = schedule.times()?;
    guidance.validate()?;
    check_latent(noise)?;
    if guidance.is_active() && guidance.rescale_phi != 0.0 && noise.dims()[1] < 2 {
        return Err(Error::InvalidRequest(
            "CFG rescale needs at least two latent channels (it uses their spread)".into(),
        ));
    }
    Ok(times)
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

            /// The time schedule.
            pub fn schedule(&self) -> &$crate::Schedule {
                &self.schedule
            }
        }
    };
}
pub(crate) use builtin_settings;
