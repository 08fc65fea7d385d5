//! Analytic toy denoisers shared by the sampler tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use audiox_core::Result;
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_sampler::Denoiser;
use burn::tensor::{Device, Tensor};

/// Data with independent Gaussian entries, `x0[b, c, l] ~ N(mean[c], std[c]^2)`.
///
/// Under `z_t = (1 - t) x0 + t eps` the marginal is `N((1 - t) m, s_t^2)` with
/// `s_t^2 = (1 - t)^2 s^2 + t^2`, the flow keeps `(z - (1 - t) m) / s_t` constant, and its
/// velocity is `v = -m + (t - (1 - t) s^2) / s_t^2 * (z - (1 - t) m)` (computed here in f64).
#[derive(Debug, Clone)]
pub struct GaussianFlow {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl GaussianFlow {
    pub fn new(mean: &[f64], std: &[f64]) -> Self {
        assert_eq!(mean.len(), std.len());
        GaussianFlow {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }

    fn channels(&self) -> usize {
        self.mean.len()
    }

    /// The exact velocity at `x` `[B, C, L]` and times `t` `[B]`.
    pub fn exact_velocity(&self, x: &Tensor<3>, t: &Tensor<1>) -> Tensor<3> {
        let [b, c, l] = x.dims();
        assert_eq!(c, self.channels());
        let xs = to_vec(x.clone());
        let ts = to_vec(t.clone());
        let mut v = Vec::with_capacity(xs.len());
        for (i, &z) in xs.iter().enumerate() {
            let (bi, ci) = (i / (c * l), (i / l) % c);
            let (m, s, t) = (self.mean[ci], self.std[ci], ts[bi] as f64);
            let var = (1.0 - t).powi(2) * s * s + t * t;
            v.push((-m + (t - (1.0 - t) * s * s) / var * (z as f64 - (1.0 - t) * m)) as f32);
        }
        from_vec(v, [b, c, l], &x.device()).unwrap()
    }

    /// Where the exact flow carries `z` from time `t0` to time 0.
    pub fn exact_endpoint(&self, z: &Tensor<3>, t0: f64) -> Vec<f64> {
        self.exact_at(z, t0, 0.0)
    }

    /// Where the exact flow carries `z` from time `t0` to time `t1`.
    pub fn exact_at(&self, z: &Tensor<3>, t0: f64, t1: f64) -> Vec<f64> {
        let [_, c, l] = z.dims();
        to_vec(z.clone())
            .iter()
            .enumerate()
            .map(|(i, &z)| {
                let ci = (i / l) % c;
                let (m, s) = (self.mean[ci], self.std[ci]);
                let spread = |t: f64| ((1.0 - t).powi(2) * s * s + t * t).sqrt();
                (1.0 - t1) * m + spread(t1) * (z as f64 - (1.0 - t0) * m) / spread(t0)
            })
            .collect()
    }
}

/// A guided toy: the conditional flow is `cond`, the unconditional one `uncond`; it counts
/// every evaluation of each kind.
#[derive(Debug)]
pub struct ToyDenoiser {
    pub cond: GaussianFlow,
    pub uncond: Option<GaussianFlow>,
    pub velocity_calls: AtomicUsize,
    pub pair_calls: AtomicUsize,
}

impl ToyDenoiser {
    pub fn new(cond: GaussianFlow) -> Self {
        ToyDenoiser {
            cond,
            uncond: None,
            velocity_calls: AtomicUsize::new(0),
            pair_calls: AtomicUsize::new(0),
        }
    }

    pub fn with_uncond(mut self, uncond: GaussianFlow) -> Self {
        self.uncond = Some(uncond);
        self
    }

    pub fn velocity_calls(&self) -> usize {
        self.velocity_calls.load(Ordering::SeqCst)
    }

    pub fn pair_calls(&self) -> usize {
        self.pair_calls.load(Ordering::SeqCst)
    }
}

impl Denoiser for ToyDenoiser {
    fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Tensor<3>> {
        self.velocity_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.cond.exact_velocity(&x, &t))
    }

    fn velocity_pair(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Option<(Tensor<3>, Tensor<3>)>> {
        let Some(uncond) = &self.uncond else {
            return Ok(None);
        };
        self.pair_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Some((
            self.cond.exact_velocity(&x, &t),
            uncond.exact_velocity(&x, &t),
        )))
    }
}

/// A three-channel Gaussian with curved flow lines (std far from 1).
pub fn curved_flow() -> GaussianFlow {
    GaussianFlow::new(&[1.0, -0.5, 0.2], &[0.3, 0.5, 2.0])
}

/// Standard-normal noise `[b, c, l]` from `seed`.
pub fn noise(seed: u64, shape: [usize; 3], device: &Device) -> Tensor<3> {
    let values = SeededNoise::new(seed)
        .normal("initial_noise", &shape)
        .unwrap();
    from_vec(values, shape, device).unwrap()
}

/// Largest absolute difference between a tensor and reference values.
pub fn max_abs_diff(got: &Tensor<3>, want: &[f64]) -> f64 {
    to_vec(got.clone())
        .iter()
        .zip(want)
        .map(|(&g, &w)| {
            let err = (g as f64 - w).abs();
            // NaN compares false everywhere: make it the worst error instead.
            if err.is_nan() { f64::INFINITY } else { err }
        })
        .fold(0.0, f64::max)
}

/// Least-squares slope of `ln(err)` against `ln(steps)`.
pub fn fitted_order(steps: &[usize], errors: &[f64]) -> f64 {
    let xs: Vec<f64> = steps.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errors.iter().map(|e| e.ln()).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    -cov / var
}
