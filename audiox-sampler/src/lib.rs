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
//! A sampler is its settings (a [`Schedule`], torch-exact linear by default, and a
//! [`Guidance`]: classifier-free guidance, optional CFG rescale) and its update rule
//! ([`Sampler::step`]). The loop is written once, in [`drive`]: it validates the settings and
//! the latent, wraps the denoiser in the guidance ([`Guided`]), walks the schedule, stops
//! between steps when the [`CancelToken`] of the [`StepControl`] is cancelled, checks each
//! step's result and reports it. Random numbers come from a
//! [`NoiseSource`](audiox_core::noise::NoiseSource). The user guide is `docs/samplers.md`.
//!
//! # Writing a sampler
//!
//! A sampler outside this crate names itself, gives its schedule, and writes its update
//! rule; [`Step`] hands it the times, the guided velocity and fresh noise. The explicit
//! midpoint method, with guidance, progress and cancellation from the driver:
//!
//! ```
//! use audiox_core::Result;
//! use audiox_core::noise::SeededNoise;
//! use audiox_sampler::{Denoiser, Guidance, Sampler, Schedule, Step, StepControl};
//! use burn::tensor::{Device, Tensor};
//!
//! #[derive(Debug)]
//! struct Midpoint(Schedule);
//!
//! impl Sampler for Midpoint {
//!     fn name(&self) -> &str {
//!         "midpoint"
//!     }
//!     fn schedule(&self) -> &Schedule {
//!         &self.0
//!     }
//!     fn evaluations_per_step(&self) -> usize {
//!         2
//!     }
//!     fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>> {
//!         let (t, dt) = (step.t(), step.dt());
//!         let half = x.clone() + step.velocity(&x, t)?.mul_scalar(0.5 * dt);
//!         Ok(x + step.velocity(&half, t + 0.5 * dt)?.mul_scalar(dt))
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
//! let sampler: Box<dyn Sampler> = Box::new(Midpoint(Schedule::linear(4)));
//! let mut rng = SeededNoise::new(7);
//! let x = sampler.sample(&ToConstant, noise, &mut rng, &mut StepControl::new())?;
//! let values = x.into_data().to_vec::<f32>().unwrap();
//! assert!(values.iter().all(|v| (v - 3.0).abs() < 1e-5));
//! assert_eq!(sampler.evaluations(), 8);
//! assert_eq!(sampler.guidance(), Guidance::none()); // override `guidance` to guide
//! # Ok::<(), audiox_core::Error>(())
//! ```
#![deny(missing_docs)]

mod builtin;
mod control;
mod denoiser;
mod dmd;
mod dpmpp;
mod driver;
mod euler;
mod guidance;
mod heun;
#[cfg(feature = "parity")]
pub mod parity;
mod sampler;
mod schedule;

pub use builtin::{Defaults, SamplerKind};
pub use control::{CancelToken, StepControl, StepInfo};
pub use denoiser::Denoiser;
pub use dmd::Dmd;
pub use dpmpp::DpmPp2M;
pub use driver::{Step, check_finite, drive};
pub use euler::Euler;
pub use guidance::{Guidance, Guided};
pub use heun::Heun;
pub use sampler::{Sampler, check_latent, velocity_at};
pub use schedule::{Schedule, torch_linspace};
