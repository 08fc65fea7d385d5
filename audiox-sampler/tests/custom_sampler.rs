//! A sampler written outside the crate, as a researcher would: Kutta's third-order method,
//! built only from the public API.

mod common;

use audiox_core::noise::{NoiseSource, ReplayNoise, SeededNoise};
use audiox_core::{Error, Result};
use audiox_sampler::{CancelToken, Euler, Guidance, Sampler, Schedule, Step, StepControl};
use burn::tensor::{Device, Tensor};
use common::{GaussianFlow, ToyDenoiser, curved_flow, fitted_order, max_abs_diff, noise};

/// Kutta's RK3 on the flow ODE: three evaluations per step, global error O(1/N^3). The
/// driver does the rest (guidance, cancellation, progress, checks).
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

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn guidance(&self) -> Guidance {
        self.guidance
    }

    fn evaluations_per_step(&self) -> usize {
        3
    }

    fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>> {
        let (t, h) = (step.t(), step.dt());
        let k1 = step.velocity(&x, t)?;
        let k2 = step.velocity(&(x.clone() + k1.clone().mul_scalar(0.5 * h)), t + 0.5 * h)?;
        let probe = x.clone() - k1.clone().mul_scalar(h) + k2.clone().mul_scalar(2.0 * h);
        let k3 = step.velocity(&probe, step.t_next())?;
        Ok(x + (k1 + k2.mul_scalar(4.0) + k3).mul_scalar(h / 6.0))
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

/// A sampler that breaks the driver's contract in one of several ways.
#[derive(Debug)]
enum Broken {
    /// Returns one more latent frame than it was given.
    WrongShape,
    /// Returns NaN everywhere on its last step.
    NotFinite,
    /// Draws step noise (from whatever source the run has).
    DrawsNoise,
}

impl Sampler for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    fn schedule(&self) -> &Schedule {
        static LINEAR: std::sync::OnceLock<Schedule> = std::sync::OnceLock::new();
        LINEAR.get_or_init(|| Schedule::linear(3))
    }

    fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> Result<Tensor<3>> {
        let [b, c, l] = x.dims();
        match self {
            Broken::WrongShape => Ok(Tensor::zeros([b, c, l + 1], &x.device())),
            Broken::NotFinite if step.is_last() => Ok(x.mul_scalar(f32::NAN)),
            Broken::NotFinite => Ok(x),
            Broken::DrawsNoise => step.noise(),
        }
    }
}

/// A noise source of the caller's that hands out NaN.
struct NanNoise;

impl NoiseSource for NanNoise {
    fn normal(&mut self, _label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(vec![f32::NAN; shape.iter().product()])
    }
    fn uniform(&mut self, _label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(vec![0.5; shape.iter().product()])
    }
    fn integers(&mut self, _label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>> {
        Ok(bounds.iter().map(|b| b.0).collect())
    }
}

#[test]
fn a_custom_sampler_breaking_its_contract_is_a_typed_error() {
    let device = Device::flex();
    let run = |sampler: Broken, rng: &mut dyn NoiseSource| {
        let toy = ToyDenoiser::new(curved_flow());
        let mut reports = 0;
        let result = {
            let mut control = StepControl::new().with_progress(|_| reports += 1);
            sampler.sample(&toy, noise(3, [1, 3, 4], &device), rng, &mut control)
        };
        (result.map(|x| x.dims()), reports)
    };
    // A latent of the wrong shape is refused after the step that made it, before any report.
    let (result, reports) = run(Broken::WrongShape, &mut SeededNoise::new(0));
    match result {
        Err(Error::InputShape { what, found, .. }) => {
            assert!(what.contains("broken") && what.contains("step 0"), "{what}");
            assert_eq!(found, vec![1, 3, 5]);
        }
        other => panic!("expected InputShape, got {other:?}"),
    }
    assert_eq!(reports, 0);
    // A non-finite result is refused.
    let (result, reports) = run(Broken::NotFinite, &mut SeededNoise::new(0));
    assert!(
        matches!(&result, Err(Error::Contract { what, message })
            if what.contains("broken") && message.contains("NaN")),
        "{result:?}"
    );
    assert_eq!(reports, 3);
    // A noise source handing out NaN is refused at the draw.
    let (result, reports) = run(Broken::DrawsNoise, &mut NanNoise);
    assert!(
        matches!(&result, Err(Error::Contract { what, .. }) if what.contains("step_noise")),
        "{result:?}"
    );
    assert_eq!(reports, 0);
    // The same sampler with an honest source runs.
    let (result, _) = run(Broken::DrawsNoise, &mut SeededNoise::new(0));
    assert_eq!(result.unwrap(), [1, 3, 4]);
}
