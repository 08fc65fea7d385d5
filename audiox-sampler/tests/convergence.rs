//! Convergence order of the ODE samplers on a toy whose exact flow is known in closed form.

mod common;

use audiox_core::noise::ReplayNoise;
use audiox_sampler::{DpmPp2M, Euler, Heun, Sampler, Schedule, StepControl};
use burn::tensor::Device;
use common::{GaussianFlow, ToyDenoiser, curved_flow, fitted_order, max_abs_diff, noise};

/// Step counts of the fitted slope.
const STEPS: [usize; 4] = [8, 16, 32, 64];
/// The multistep solver bootstraps with a first-order step: fit it past that transient.
const MULTISTEP_STEPS: [usize; 4] = [16, 32, 64, 128];

/// Errors at the end of the flow (time 0) for each step count.
fn errors(make: impl Fn(usize) -> Box<dyn Sampler>, flow: &GaussianFlow, start: f64) -> Vec<f64> {
    errors_to(&STEPS, make, flow, start, 0.0)
}

/// Errors at time `end` for each step count (the schedules must run from `start` to `end`).
fn errors_to(
    steps: &[usize],
    make: impl Fn(usize) -> Box<dyn Sampler>,
    flow: &GaussianFlow,
    start: f64,
    end: f64,
) -> Vec<f64> {
    let device = Device::flex();
    let z = noise(11, [2, 3, 7], &device);
    let exact = flow.exact_at(&z, start, end);
    let toy = ToyDenoiser::new(flow.clone());
    steps
        .iter()
        .map(|&n| {
            let sampler = make(n);
            // ODE samplers draw no random numbers: an empty replay proves it.
            let mut rng = ReplayNoise::new();
            let x = sampler
                .sample(&toy, z.clone(), &mut rng, &mut StepControl::new())
                .unwrap();
            max_abs_diff(&x, &exact)
        })
        .collect()
}

fn assert_order(name: &str, errors: &[f64], low: f64, high: f64) {
    assert_order_at(name, &STEPS, errors, low, high);
}

fn assert_order_at(name: &str, steps: &[usize], errors: &[f64], low: f64, high: f64) {
    let order = fitted_order(steps, errors);
    let shown: Vec<String> = errors.iter().map(|e| format!("{e:.3e}")).collect();
    eprintln!("{name}: errors {shown:?} at steps {steps:?}, fitted order {order:.3}");
    assert!(
        (low..=high).contains(&order),
        "{name}: fitted order {order:.3} outside [{low}, {high}] (errors {shown:?})"
    );
    // The error falls at every refinement, not just on average.
    assert!(errors.windows(2).all(|w| w[1] < w[0]), "{name}: {shown:?}");
}

#[test]
fn euler_is_first_order() {
    let e = errors(|n| Box::new(Euler::new(n)), &curved_flow(), 1.0);
    assert_order("euler", &e, 0.9, 1.15);
}

#[test]
fn heun_is_second_order() {
    let e = errors(|n| Box::new(Heun::new(n)), &curved_flow(), 1.0);
    assert_order("heun", &e, 1.85, 2.3);
    // And much more accurate than Euler at equal evaluations.
    let euler = errors(|n| Box::new(Euler::new(2 * n)), &curved_flow(), 1.0);
    assert!(
        e[3] < euler[3] / 10.0,
        "heun {:.3e} vs euler {:.3e}",
        e[3],
        euler[3]
    );
}

/// `steps` steps uniform in the log-SNR `lambda = ln((1 - t) / t)` from `t0` to `t1`.
fn log_snr_grid(t0: f64, t1: f64, steps: usize) -> Schedule {
    let lambda = |t: f64| ((1.0 - t) / t).ln();
    let (l0, l1) = (lambda(t0), lambda(t1));
    let times = (0..=steps)
        .map(|i| {
            let l = l0 + (l1 - l0) * i as f64 / steps as f64;
            (1.0 / (1.0 + l.exp())) as f32
        })
        .collect();
    Schedule::custom(times)
}

#[test]
fn dpmpp_2m_is_second_order_in_log_snr() {
    // On steps of equal log-SNR the multistep update is a clean second-order method.
    let (t0, t1) = (0.9, 0.05);
    let e = errors_to(
        &MULTISTEP_STEPS,
        |n| Box::new(DpmPp2M::new(n).with_schedule(log_snr_grid(t0, t1, n))),
        &curved_flow(),
        t0 as f32 as f64,
        t1 as f32 as f64,
    );
    assert_order_at(
        "dpmpp-2m on a log-SNR grid",
        &MULTISTEP_STEPS,
        &e,
        1.85,
        2.3,
    );
}

#[test]
fn dpmpp_2m_converges_fast_on_the_full_linear_schedule() {
    // From t = 1 to t = 0 on the linear grid (both endpoints at infinite log-SNR): the steps
    // next to the ends stay O(1) in log-SNR, which costs a log factor (error ~ h^2 ln(1/h)).
    let flow = curved_flow();
    let e = errors_to(
        &MULTISTEP_STEPS,
        |n| Box::new(DpmPp2M::new(n)),
        &flow,
        1.0,
        0.0,
    );
    assert_order_at("dpmpp-2m", &MULTISTEP_STEPS, &e, 1.6, 2.3);
    // Divided by the log factor, the error falls at second order.
    let reduced: Vec<f64> = e
        .iter()
        .zip(MULTISTEP_STEPS)
        .map(|(e, n)| e / (n as f64).ln())
        .collect();
    assert_order_at("dpmpp-2m / ln(N)", &MULTISTEP_STEPS, &reduced, 1.85, 2.3);
    let euler = errors_to(
        &MULTISTEP_STEPS,
        |n| Box::new(Euler::new(n)),
        &flow,
        1.0,
        0.0,
    );
    assert!(
        e[3] < euler[3] / 10.0,
        "dpm++ {:.3e} vs euler {:.3e}",
        e[3],
        euler[3]
    );
}

#[test]
fn euler_and_heun_orders_hold_from_inside_the_interval() {
    // A variation run starts at t < 1, where the log-SNR is finite from the first step.
    let flow = curved_flow();
    let partial = |n| Schedule::linear_from(0.6, n);
    let e = errors(
        |n| Box::new(Euler::new(n).with_schedule(partial(n))),
        &flow,
        0.6,
    );
    assert_order("euler from 0.6", &e, 0.9, 1.15);
    let e = errors(
        |n| Box::new(Heun::new(n).with_schedule(partial(n))),
        &flow,
        0.6,
    );
    assert_order("heun from 0.6", &e, 1.85, 2.3);
}

#[test]
fn every_sampler_is_exact_when_the_data_is_a_point() {
    // With zero data spread the flow lines are straight, x0 is known at every t, and each
    // method is exact (up to f32 rounding) in any number of steps. (The toy's velocity is
    // singular at t = 0 for point data, so the grid stops just short of it.)
    let flow = GaussianFlow::new(&[0.7, -1.2], &[0.0, 0.0]);
    let device = Device::flex();
    let z = noise(3, [1, 2, 5], &device);
    let end = 0.01f32;
    let exact = flow.exact_at(&z, 1.0, end as f64);
    let grid = Schedule::custom(vec![1.0, 0.7, 0.3, end]);
    let samplers: [Box<dyn Sampler>; 3] = [
        Box::new(Euler::new(3).with_schedule(grid.clone())),
        Box::new(Heun::new(3).with_schedule(grid.clone())),
        Box::new(DpmPp2M::new(3).with_schedule(grid)),
    ];
    for sampler in samplers {
        let toy = ToyDenoiser::new(flow.clone());
        let x = sampler
            .sample(
                &toy,
                z.clone(),
                &mut ReplayNoise::new(),
                &mut StepControl::new(),
            )
            .unwrap();
        let err = max_abs_diff(&x, &exact);
        assert!(err < 1e-5, "{}: {err:.3e}", sampler.name());
        assert_eq!(toy.velocity_calls(), sampler.evaluations());
    }
}
