//! A sampler written outside the crate, as a researcher would: Kutta's third-order method,
//! built only from the public API.

mod common;

use audiox_core::Result;
use audiox_core::noise::{NoiseSource, ReplayNoise};
use audiox_sampler::{
    CancelToken, Denoiser, Euler, Guidance, Guided, Sampler, Schedule, StepControl, StepInfo,
    check_latent, velocity_at,
};
use burn::tensor::{Device, Tensor};
use common::{GaussianFlow, ToyDenoiser, curved_flow, fitted_order, max_abs_diff, noise};

/// Kutta's RK3 on the flow ODE: three evaluations per step, global error O(1/N^3).
#[derive(Debug, Clone)]
struct Kutta3 {
    schedule: Schedule,
    guidance: Guidance,
}

impl Kutta3 {
    fn new(steps: usize) -> Self {
        Kutta3 {
            schedule: Schedule::linear(steps),
            guidance: Guidance::none(),
        }
    }
}

impl Sampler for Kutta3 {
    fn name(&self) -> &str {
        "kutta3"
    }

    fn steps(&self) -> usize {
        self.schedule.steps()
    }

    fn evaluations(&self) -> usize {
        3 * self.steps()
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
        self.validate()?;
        check_latent(&noise)?;
        let times = self.schedule.times()?;
        let denoiser = Guided::new(denoiser, self.guidance);
        let total = times.len() - 1;
        let mut x = noise;
        for (k, w) in times.windows(2).enumerate() {
            control.check_cancelled(k, total)?;
            let (t, h) = (w[0], w[1] - w[0]);
            let k1 = velocity_at(&denoiser, &x, t)?;
            let k2 = velocity_at(
                &denoiser,
                &(x.clone() + k1.clone().mul_scalar(0.5 * h)),
                t + 0.5 * h,
            )?;
            let probe = x.clone() - k1.clone().mul_scalar(h) + k2.clone().mul_scalar(2.0 * h);
            let k3 = velocity_at(&denoiser, &probe, w[1])?;
            x = x + (k1 + k2.mul_scalar(4.0) + k3).mul_scalar(h / 6.0);
            control.report(&StepInfo::new(k, total, t, w[1], &x));
        }
        Ok(x)
    }
}

#[test]
fn a_third_order_sampler_from_outside_converges_at_third_order() {
    let device = Device::flex();
    let flow = curved_flow();
    let z = noise(21, [2, 3, 5], &device);
    let exact = flow.exact_endpoint(&z, 1.0);
    let steps = [8, 16, 32, 64];
    let errors: Vec<f64> = steps
        .iter()
        .map(|&n| {
            let toy = ToyDenoiser::new(flow.clone());
            let x = Kutta3::new(n)
                .sample(
                    &toy,
                    z.clone(),
                    &mut ReplayNoise::new(),
                    &mut StepControl::new(),
                )
                .unwrap();
            max_abs_diff(&x, &exact)
        })
        .collect();
    let order = fitted_order(&steps, &errors);
    eprintln!("kutta3: errors {errors:?}, fitted order {order:.3}");
    assert!((2.7..=3.4).contains(&order), "order {order:.3}: {errors:?}");
}

#[test]
fn the_custom_sampler_gets_guidance_progress_and_cancellation_like_a_builtin() {
    let device = Device::flex();
    let toy = ToyDenoiser::new(curved_flow()).with_uncond(GaussianFlow::new(&[0.0; 3], &[1.0; 3]));
    let samplers: Vec<Box<dyn Sampler>> = vec![
        Box::new(Euler::new(6).with_guidance(Guidance::cfg(3.0))),
        Box::new(Kutta3 {
            schedule: Schedule::linear(6),
            guidance: Guidance::cfg(3.0),
        }),
    ];
    for sampler in &samplers {
        let token = CancelToken::new();
        let trigger = token.clone();
        let mut steps_seen = Vec::new();
        let err = {
            let mut control = StepControl::new().with_cancel(token).with_progress(|info| {
                steps_seen.push(info.step);
                if info.step == 2 {
                    trigger.cancel();
                }
            });
            sampler
                .sample(
                    &toy,
                    noise(5, [1, 3, 4], &device),
                    &mut ReplayNoise::new(),
                    &mut control,
                )
                .unwrap_err()
        };
        assert!(matches!(
            err,
            audiox_core::Error::Cancelled {
                completed_steps: 3,
                total_steps: 6
            }
        ));
        assert_eq!(steps_seen, vec![0, 1, 2], "{}", sampler.name());
    }
    // Guided throughout: every evaluation was a batched pair.
    assert_eq!(toy.velocity_calls(), 0);
    assert_eq!(toy.pair_calls(), 3 + 3 * 3);
}

#[test]
fn the_custom_sampler_runs_on_another_thread() {
    let sampler: Box<dyn Sampler> = Box::new(Kutta3::new(32));
    let handle = std::thread::spawn(move || {
        let device = Device::flex();
        let flow = curved_flow();
        let z = noise(1, [1, 3, 3], &device);
        let x = sampler
            .sample(
                &ToyDenoiser::new(flow.clone()),
                z.clone(),
                &mut ReplayNoise::new(),
                &mut StepControl::new(),
            )
            .unwrap();
        max_abs_diff(&x, &flow.exact_endpoint(&z, 1.0))
    });
    let err = handle.join().unwrap();
    assert!(err < 1e-4, "{err:.3e}");
}
