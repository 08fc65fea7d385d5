//! Progress, cancellation, guidance, determinism and input checks of the built-in samplers.

mod common;

use std::sync::{Arc, Mutex};

use audiox_core::Error;
use audiox_core::noise::{NoiseSource, ReplayNoise, SeededNoise, labels};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_sampler::{
    CancelToken, Denoiser, Dmd, DpmPp2M, Euler, Guidance, Guided, Heun, Sampler, SamplerKind,
    Schedule, StepControl,
};
use burn::tensor::{Device, Tensor};
use common::{GaussianFlow, ToyDenoiser, curved_flow, noise};

fn all_builtins(steps: usize, guidance: Guidance) -> Vec<Box<dyn Sampler>> {
    SamplerKind::ALL
        .iter()
        .map(|kind| kind.build(steps, guidance))
        .collect()
}

fn guided_toy() -> ToyDenoiser {
    ToyDenoiser::new(curved_flow()).with_uncond(GaussianFlow::new(&[0.0; 3], &[1.0; 3]))
}

#[test]
fn progress_reports_every_step_in_order() {
    let device = Device::flex();
    for sampler in all_builtins(5, Guidance::none()) {
        let toy = ToyDenoiser::new(curved_flow());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut control = StepControl::new().with_progress(move |info| {
            let x = to_vec(info.x.clone());
            log.lock().unwrap().push((
                info.step,
                info.total,
                info.t,
                info.t_next,
                x,
                info.denoised.is_some(),
            ));
        });
        let out = sampler
            .sample(
                &toy,
                noise(1, [1, 3, 4], &device),
                &mut SeededNoise::new(1),
                &mut control,
            )
            .unwrap();
        let seen = seen.lock().unwrap();
        let times = Schedule::linear(5).times().unwrap();
        assert_eq!(seen.len(), 5, "{}", sampler.name());
        for (k, (step, total, t, t_next, _, denoised)) in seen.iter().enumerate() {
            assert_eq!((*step, *total), (k, 5));
            assert_eq!((*t, *t_next), (times[k], times[k + 1]));
            // Every built-in hands out its clean-latent estimate when asked for progress.
            assert!(denoised, "{}", sampler.name());
        }
        // The last report shows the returned latent.
        assert_eq!(seen[4].4, to_vec(out), "{}", sampler.name());
        assert_eq!(toy.velocity_calls(), sampler.evaluations());
    }
}

#[test]
fn cancelling_stops_between_steps_with_a_typed_error() {
    let device = Device::flex();
    for sampler in all_builtins(6, Guidance::none()) {
        let toy = ToyDenoiser::new(curved_flow());
        let token = CancelToken::new();
        let trigger = token.clone();
        // Cancel from inside the callback after step index 1 (two steps done).
        let mut control = StepControl::new()
            .with_cancel(token)
            .with_progress(move |info| {
                if info.step == 1 {
                    trigger.cancel();
                }
            });
        let err = sampler
            .sample(
                &toy,
                noise(2, [2, 3, 4], &device),
                &mut SeededNoise::new(2),
                &mut control,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Cancelled {
                    completed_steps: 2,
                    total_steps: 6
                }
            ),
            "{}: {err}",
            sampler.name()
        );
        // No evaluation happened after the cancellation was seen.
        let per_step = sampler.evaluations() / sampler.steps();
        assert_eq!(toy.velocity_calls(), 2 * per_step, "{}", sampler.name());
    }
}

#[test]
fn a_cancelled_token_stops_before_any_evaluation() {
    let device = Device::flex();
    let token = CancelToken::new();
    token.cancel();
    for sampler in all_builtins(4, Guidance::none()) {
        let toy = ToyDenoiser::new(curved_flow());
        let mut control = StepControl::new().with_cancel(token.clone());
        let err = sampler
            .sample(
                &toy,
                noise(3, [1, 3, 2], &device),
                &mut ReplayNoise::new(),
                &mut control,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Cancelled {
                completed_steps: 0,
                total_steps: 4
            }
        ));
        assert_eq!(toy.velocity_calls(), 0);
    }
}

#[test]
fn cancelling_from_another_thread() {
    // A UI thread keeps a clone of the token; the sampler runs elsewhere.
    let device = Device::flex();
    let token = CancelToken::new();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker_token = token.clone();
    let worker = std::thread::spawn(move || {
        let toy = ToyDenoiser::new(curved_flow());
        let mut control = StepControl::new()
            .with_cancel(worker_token)
            .with_progress(move |info| {
                if info.step == 0 {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                }
            });
        Euler::new(10).sample(
            &toy,
            noise(4, [1, 3, 2], &device),
            &mut ReplayNoise::new(),
            &mut control,
        )
    });
    started_rx.recv().unwrap();
    token.cancel();
    go_tx.send(()).unwrap();
    let err = worker.join().unwrap().unwrap_err();
    assert!(matches!(
        err,
        Error::Cancelled {
            completed_steps: 1,
            total_steps: 10
        }
    ));
}

#[test]
fn guidance_without_an_unconditional_branch_fails_before_any_evaluation() {
    let device = Device::flex();
    for sampler in all_builtins(4, Guidance::cfg(6.0)) {
        let toy = ToyDenoiser::new(curved_flow()); // no unconditional flow
        let err = sampler
            .sample(
                &toy,
                noise(5, [1, 3, 2], &device),
                &mut ReplayNoise::new(),
                &mut StepControl::new(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidRequest(m) if m.contains("unconditional")),
            "{}: {err}",
            sampler.name()
        );
        assert_eq!(toy.velocity_calls() + toy.pair_calls(), 0);
    }
}

#[test]
fn scale_one_never_evaluates_the_unconditional_branch() {
    let device = Device::flex();
    for guidance in [Guidance::none(), Guidance::cfg(1.0).with_rescale(0.7)] {
        for sampler in all_builtins(3, guidance) {
            let toy = guided_toy();
            sampler
                .sample(
                    &toy,
                    noise(6, [1, 3, 2], &device),
                    &mut SeededNoise::new(6),
                    &mut StepControl::new(),
                )
                .unwrap();
            assert_eq!(toy.pair_calls(), 0, "{}", sampler.name());
            assert_eq!(toy.velocity_calls(), sampler.evaluations());
        }
    }
}

#[test]
fn guided_samplers_use_one_batched_pair_per_evaluation() {
    let device = Device::flex();
    for sampler in all_builtins(3, Guidance::cfg(4.0)) {
        let toy = guided_toy();
        sampler
            .sample(
                &toy,
                noise(7, [2, 3, 2], &device),
                &mut SeededNoise::new(7),
                &mut StepControl::new(),
            )
            .unwrap();
        assert_eq!(toy.velocity_calls(), 0, "{}", sampler.name());
        assert_eq!(
            toy.pair_calls(),
            sampler.evaluations(),
            "{}",
            sampler.name()
        );
    }
}

/// Returns fixed conditional and unconditional velocities.
struct FixedPair {
    cond: Tensor<3>,
    uncond: Tensor<3>,
}

impl Denoiser for FixedPair {
    fn velocity(&self, _x: Tensor<3>, _t: Tensor<1>) -> audiox_core::Result<Tensor<3>> {
        Ok(self.cond.clone())
    }
    fn velocity_pair(
        &self,
        _x: Tensor<3>,
        _t: Tensor<1>,
    ) -> audiox_core::Result<Option<(Tensor<3>, Tensor<3>)>> {
        Ok(Some((self.cond.clone(), self.uncond.clone())))
    }
}

#[test]
fn guidance_with_rescale_matches_a_float64_computation() {
    let device = Device::flex();
    let (b, c, l) = (2, 4, 3);
    let n = b * c * l;
    let cond: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 1.5 + 0.2).collect();
    let uncond: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos() * 0.8).collect();
    let (scale, phi) = (6.0f64, 0.7f64);
    let pair = FixedPair {
        cond: from_vec(cond.clone(), [b, c, l], &device).unwrap(),
        uncond: from_vec(uncond.clone(), [b, c, l], &device).unwrap(),
    };
    let got = Guided::new(&pair, Guidance::cfg(scale as f32).with_rescale(phi as f32))
        .velocity(
            Tensor::zeros([b, c, l], &device),
            Tensor::ones([b], &device),
        )
        .unwrap();

    // Reference in f64: unbiased std over the channel axis, per (batch, position).
    let at = |v: &[f32], bi: usize, ci: usize, li: usize| v[(bi * c + ci) * l + li] as f64;
    let guided = |bi, ci, li| {
        let u = at(&uncond, bi, ci, li);
        u + (at(&cond, bi, ci, li) - u) * scale
    };
    let std = |f: &dyn Fn(usize) -> f64| {
        let mean = (0..c).map(f).sum::<f64>() / c as f64;
        ((0..c).map(|ci| (f(ci) - mean).powi(2)).sum::<f64>() / (c - 1) as f64).sqrt()
    };
    let mut want = Vec::with_capacity(n);
    for bi in 0..b {
        for ci in 0..c {
            for li in 0..l {
                let s_cond = std(&|k| at(&cond, bi, k, li));
                let s_guided = std(&|k| guided(bi, k, li));
                let g = guided(bi, ci, li);
                want.push(phi * g * s_cond / s_guided + (1.0 - phi) * g);
            }
        }
    }
    let got = to_vec(got);
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
    }
    // And the rescale did something.
    let plain = Guidance::cfg(scale as f32).combine(pair.cond.clone(), pair.uncond.clone());
    assert_ne!(to_vec(plain), got);
}

#[test]
fn rescale_keeps_flat_velocities_finite() {
    let device = Device::flex();
    // Every channel equal: the guided spread is zero.
    let pair = FixedPair {
        cond: Tensor::ones([1, 3, 2], &device),
        uncond: Tensor::zeros([1, 3, 2], &device),
    };
    let v = Guidance::cfg(3.0)
        .with_rescale(0.5)
        .combine(pair.cond, pair.uncond);
    assert_eq!(to_vec(v), vec![3.0; 6]);
}

#[test]
fn dmd_draws_one_labelled_noise_per_renoising_step() {
    let device = Device::flex();
    let shape = [2, 3, 5];
    let eps = |k: usize| vec![k as f32 * 0.1; 30];
    let mut rng = ReplayNoise::new()
        .with_normal(labels::STEP_NOISE, &shape, eps(1))
        .with_normal(labels::STEP_NOISE, &shape, eps(2))
        .with_normal(labels::STEP_NOISE, &shape, eps(3));
    let toy = ToyDenoiser::new(curved_flow());
    Dmd::default()
        .sample(
            &toy,
            noise(8, shape, &device),
            &mut rng,
            &mut StepControl::new(),
        )
        .unwrap();
    rng.finish().unwrap();
    assert_eq!(toy.velocity_calls(), 4);
}

#[test]
fn dmd_step_arithmetic_by_hand() {
    // Two steps on the schedule [1, 0.5, 0] with a constant velocity 2 and noise 1:
    // x0 = z - 1 * 2, z = 0.5 * 1 + 0.5 * x0, x0 = z - 0.5 * 2.
    struct Two;
    impl Denoiser for Two {
        fn velocity(&self, x: Tensor<3>, _t: Tensor<1>) -> audiox_core::Result<Tensor<3>> {
            Ok(x.ones_like().mul_scalar(2.0))
        }
    }
    let device = Device::flex();
    let mut rng = ReplayNoise::new().with_normal(labels::STEP_NOISE, &[1, 1, 2], vec![1.0, 1.0]);
    let z = from_vec(vec![3.0, 5.0], [1, 1, 2], &device).unwrap();
    let out = Dmd::new(2)
        .sample(&Two, z, &mut rng, &mut StepControl::new())
        .unwrap();
    // z = [3, 5] -> x0 = [1, 3] -> z = [1, 2] -> x0 = [0, 1].
    assert_eq!(to_vec(out), vec![0.0, 1.0]);
}

#[test]
fn same_seed_same_result_and_a_new_seed_changes_it() {
    let device = Device::flex();
    let run = |seed: u64| {
        let mut rng = SeededNoise::new(seed);
        let start = rng.normal(labels::INITIAL_NOISE, &[2, 3, 6]).unwrap();
        let start = from_vec(start, [2, 3, 6], &device).unwrap();
        let toy = guided_toy();
        let out = Dmd::default()
            .with_guidance(Guidance::cfg(2.0).with_rescale(0.5))
            .sample(&toy, start, &mut rng, &mut StepControl::new())
            .unwrap();
        to_vec(out)
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
    // The deterministic samplers map the same noise to the same latent.
    for sampler in all_builtins(4, Guidance::cfg(3.0)) {
        let once = |_: ()| {
            let toy = guided_toy();
            to_vec(
                sampler
                    .sample(
                        &toy,
                        noise(9, [1, 3, 4], &device),
                        &mut SeededNoise::new(9),
                        &mut StepControl::new(),
                    )
                    .unwrap(),
            )
        };
        assert_eq!(once(()), once(()), "{}", sampler.name());
    }
}

#[test]
fn bad_settings_and_inputs_are_typed_errors_before_any_evaluation() {
    let device = Device::flex();
    let cases: Vec<(Box<dyn Sampler>, [usize; 3])> = vec![
        (Box::new(Dmd::new(0)), [1, 3, 2]),
        (Box::new(Euler::new(0)), [1, 3, 2]),
        (
            Box::new(Heun::new(3).with_schedule(Schedule::custom(vec![1.0, 0.5, 0.7]))),
            [1, 3, 2],
        ),
        (
            Box::new(DpmPp2M::new(3).with_guidance(Guidance::cfg(f32::INFINITY))),
            [1, 3, 2],
        ),
        (
            Box::new(Euler::new(3).with_guidance(Guidance::cfg(2.0).with_rescale(1.5))),
            [1, 3, 2],
        ),
        (Box::new(Euler::new(3)), [0, 3, 2]),
        // A rescale needs at least two channels.
        (
            Box::new(Euler::new(3).with_guidance(Guidance::cfg(2.0).with_rescale(0.5))),
            [1, 1, 2],
        ),
    ];
    for (sampler, shape) in cases {
        let toy = guided_toy();
        let z = Tensor::<3>::zeros(shape, &device);
        let err = sampler
            .sample(&toy, z, &mut ReplayNoise::new(), &mut StepControl::new())
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest(_) | Error::InputShape { .. }),
            "{sampler:?}: {err}"
        );
        assert_eq!(toy.velocity_calls() + toy.pair_calls(), 0, "{sampler:?}");
    }
    assert!(Dmd::new(0).validate().is_err());
    assert!(Dmd::new(4).validate().is_ok());
    assert!(matches!(
        "nope".parse::<SamplerKind>(),
        Err(Error::InvalidRequest(m)) if m.contains("dmd, euler, heun, dpmpp-2m")
    ));
}

#[test]
fn a_velocity_of_the_wrong_shape_is_an_error_not_a_panic() {
    struct Wrong;
    impl Denoiser for Wrong {
        fn velocity(&self, x: Tensor<3>, _t: Tensor<1>) -> audiox_core::Result<Tensor<3>> {
            let [b, c, l] = x.dims();
            Ok(Tensor::zeros([b, c, l + 1], &x.device()))
        }
    }
    let device = Device::flex();
    for sampler in all_builtins(2, Guidance::none()) {
        let err = sampler
            .sample(
                &Wrong,
                Tensor::zeros([1, 2, 3], &device),
                &mut SeededNoise::new(0),
                &mut StepControl::new(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::InputShape { found, .. } if found == &vec![1, 2, 4]),
            "{err}"
        );
    }
}

#[test]
fn samplers_are_shareable_trait_objects() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Sampler>();
    let shared: Arc<dyn Sampler> = Arc::new(Dmd::default());
    let boxed: Box<dyn Sampler> = Box::new(shared.clone());
    assert_eq!((boxed.name(), boxed.steps()), ("dmd", 4));
}

#[test]
fn kinds_round_trip_through_their_names_and_build_what_they_name() {
    for kind in SamplerKind::ALL {
        assert_eq!(kind.name().parse::<SamplerKind>().unwrap(), kind);
        assert_eq!(kind.to_string(), kind.name());
        let s = kind.build(kind.default_steps(), Guidance::none());
        assert_eq!((s.name(), s.steps()), (kind.name(), kind.default_steps()));
    }
    // The defaults table agrees with the samplers' own constructors.
    assert_eq!(Dmd::default().steps(), SamplerKind::Dmd.default_steps());
    assert_eq!(Euler::teacher().steps(), SamplerKind::Euler.default_steps());
    assert_eq!(
        Euler::teacher().guidance(),
        audiox_sampler::Defaults::TEACHER.guidance
    );
}
