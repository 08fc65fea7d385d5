//! Samplers for rectified-flow models, independent of audio and of the network.
//!
//! A [`Denoiser`] predicts the velocity `v = eps - x0` of the noisy latent
//! `z_t = (1 - t) x0 + t eps` (t = 1 is noise, t = 0 data); a [`Sampler`] turns noise into a
//! clean latent by calling it. Built-ins:
//!
//! | sampler | what | evaluations |
//! |---|---|---|
//! | [`Dmd`] | the AudioX-Turbo student: predict `x0`, re-noise with fresh noise, repeat (4 steps) | N |
//! | [`Euler`] | the base model's rectified-flow Euler (250 steps, CFG 6 in the reference) | N |
//! | [`Heun`] | second-order predictor-corrector | 2N |
//! | [`DpmPp2M`] | DPM-Solver++(2M) in rectified-flow log-SNR, second order | N |
//!
//! Every sampler takes a [`Schedule`] (torch-exact linear by default), a [`Guidance`]
//! (classifier-free guidance through the [`Guided`] adapter, optional CFG rescale), draws its
//! random numbers from a [`NoiseSource`](audiox_core::noise::NoiseSource), reports each step
//! through a [`StepControl`] and stops between steps when its [`CancelToken`] is cancelled.
//! The user guide is `docs/samplers.md`.
//!
//! # Writing a sampler
//!
//! A sampler outside this crate implements [`Sampler`]; [`velocity_at`], [`Guided`] and the
//! [`StepControl`] methods do the bookkeeping. The explicit midpoint method:
//!
//! ```
//! use audiox_core::Result;
//! use audiox_core::noise::{NoiseSource, SeededNoise};
//! use audiox_sampler::{
//!     Denoiser, Guidance, Guided, Sampler, Schedule, StepControl, StepInfo, velocity_at,
//! };
//! use burn::tensor::{Device, Tensor};
//!
//! #[derive(Debug)]
//! struct Midpoint {
//!     schedule: Schedule,
//!     guidance: Guidance,
//! }
//!
//! impl Sampler for Midpoint {
//!     fn name(&self) -> &str {
//!         "midpoint"
//!     }
//!     fn steps(&self) -> usize {
//!         self.schedule.steps()
//!     }
//!     fn evaluations(&self) -> usize {
//!         2 * self.steps()
//!     }
//!     fn sample(
//!         &self,
//!         denoiser: &dyn Denoiser,
//!         noise: Tensor<3>,
//!         _rng: &mut dyn NoiseSource,
//!         control: &mut StepControl<'_>,
//!     ) -> Result<Tensor<3>> {
//!         let times = self.schedule.times()?;
//!         self.guidance.validate()?;
//!         let denoiser = Guided::new(denoiser, self.guidance);
//!         let total = times.len() - 1;
//!         let mut x = noise;
//!         for (k, w) in times.windows(2).enumerate() {
//!             control.check_cancelled(k, total)?;
//!             let (t, dt) = (w[0], w[1] - w[0]);
//!             let v = velocity_at(&denoiser, &x, t)?;
//!             let half = x.clone() + v.mul_scalar(0.5 * dt);
//!             x = x + velocity_at(&denoiser, &half, t + 0.5 * dt)?.mul_scalar(dt);
//!             control.report(&StepInfo::new(k, total, t, w[1], &x));
//!         }
//!         Ok(x)
//!     }
//! }
//!
//! /// The exact velocity when every data point is 3: `z_t = 3 (1 - t) + t eps`, so
//! /// `v = eps - 3 = (z_t - 3) / t`.
//! struct ToConstant;
//! impl Denoiser for ToConstant {
//!     fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Tensor<3>> {
//!         let t = t.reshape([-1, 1, 1]);
//!         Ok((x - 3.0) / t)
//!     }
//! }
//!
//! let device = Device::flex();
//! let noise = Tensor::<3>::ones([1, 2, 4], &device);
//! let sampler: Box<dyn Sampler> =
//!     Box::new(Midpoint { schedule: Schedule::linear(4), guidance: Guidance::none() });
//! let mut rng = SeededNoise::new(7);
//! let x = sampler.sample(&ToConstant, noise, &mut rng, &mut StepControl::new())?;
//! let values = x.into_data().to_vec::<f32>().unwrap();
//! assert!(values.iter().all(|v| (v - 3.0).abs() < 1e-5));
//! # Ok::<(), audiox_core::Error>(())
//! ```
#![deny(missing_docs)]

mod control;
mod denoiser;
mod dmd;
mod dpmpp;
mod euler;
mod guidance;
mod heun;
#[cfg(feature = "parity")]
pub mod parity;
mod sampler;
mod schedule;

pub use control::{CancelToken, StepControl, StepInfo};
pub use denoiser::Denoiser;
pub use dmd::Dmd;
pub use dpmpp::DpmPp2M;
pub use euler::Euler;
pub use guidance::{Guidance, Guided};
pub use heun::Heun;
pub use sampler::{BUILTIN_SAMPLERS, Sampler, by_name, check_latent, velocity_at};
pub use schedule::{Schedule, torch_linspace};
