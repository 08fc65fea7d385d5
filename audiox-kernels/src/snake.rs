//! The fused SnakeBeta activation.

use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::{flex_f32, reference, values};

/// SnakeBeta over channels: `y = x + sin(e^alpha x)^2 / (e^beta + 1e-9)` for `x` `[B, C, T]`
/// and per-channel log parameters `alpha`, `beta` `[C]`. One pass over `x` on the CPU backend
/// (in place when `x` is not shared), [`reference::snake`] elsewhere.
pub fn snake(x: Tensor<3>, alpha: &Tensor<1>, beta: &Tensor<1>) -> Tensor<3> {
    let (Some(a), Some(b)) = (flex_f32(alpha), flex_f32(beta)) else {
        return reference::snake(x, alpha, beta);
    };
    let Some(flex) = flex_f32(&x) else {
        return reference::snake(x, alpha, beta);
    };
    let [_, c, t] = x.dims();
    if t == 0 || c == 0 {
        return x;
    }
    let (freq, inv_mag) = factors(values(&a), values(&b));
    drop(flex);
    crate::map_values_in_place(x, |buf| apply(buf, t, &freq, &inv_mag, c))
}

/// The per-channel factors `e^alpha` and `1 / (e^beta + 1e-9)`, computed in f32 as the
/// composed ops do.
pub(crate) fn factors(alpha: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (
        alpha.iter().map(|v| v.exp()).collect(),
        beta.iter().map(|v| 1.0 / (v.exp() + 1e-9)).collect(),
    )
}

fn apply(buf: &mut [f32], t: usize, freq: &[f32], inv_mag: &[f32], channels: usize) {
    buf.par_chunks_mut(t).enumerate().for_each(|(row, x)| {
        let ch = row % channels;
        snake_row(x, freq[ch], inv_mag[ch]);
    });
}

/// One row of Snake in place, on the widest vectors the CPU has. The same code at every
/// width: without fused multiply-adds (Rust does not contract float operations) each lane
/// computes exactly the scalar result, so the output does not depend on the CPU.
pub(crate) fn snake_row(x: &mut [f32], freq: f32, inv_mag: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { snake_row_avx512(x, freq, inv_mag) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { snake_row_avx2(x, freq, inv_mag) };
        return;
    }
    snake_row_generic(x, freq, inv_mag);
}

/// Eight f64 lanes of the range reduction per instruction (AVX2: four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn snake_row_avx512(x: &mut [f32], freq: f32, inv_mag: f32) {
    snake_row_generic(x, freq, inv_mag);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn snake_row_avx2(x: &mut [f32], freq: f32, inv_mag: f32) {
    snake_row_generic(x, freq, inv_mag);
}

#[inline(always)]
fn snake_row_generic(x: &mut [f32], freq: f32, inv_mag: f32) {
    for v in x.iter_mut() {
        *v += inv_mag * sin_squared(*v * freq);
    }
}

/// `sin(u)^2` for an f32 `u`, to f32 precision: `u` reduced modulo pi/2 in f64 (exact for
/// |u| < 2^30), then `sin(r)^2` or `cos(r)^2 = 1 - sin(r)^2` by the parity of the quotient,
/// with a degree-13 odd polynomial for `sin` on [-pi/4, pi/4]. Branch-free, so the loop
/// vectorises.
#[inline(always)]
pub(crate) fn sin_squared(u: f32) -> f32 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    const FRAC_2_PI: f64 = std::f64::consts::FRAC_2_PI;
    const PI_2_HI: f64 = std::f64::consts::FRAC_PI_2; // pi/2 rounded to f64
    const PI_2_LO: f64 = 6.123_233_995_736_766e-17; // pi/2 - PI_2_HI
    let u = u as f64;
    let shifted = u * FRAC_2_PI + MAGIC;
    let odd = (shifted.to_bits() & 1) as f64;
    let k = shifted - MAGIC;
    let r = (u - k * PI_2_HI) - k * PI_2_LO;
    let r2 = r * r;
    let s = r + r
        * r2
        * (-1.0 / 6.0
            + r2 * (1.0 / 120.0
                + r2 * (-1.0 / 5040.0
                    + r2 * (1.0 / 362_880.0
                        + r2 * (-1.0 / 39_916_800.0 + r2 * (1.0 / 6_227_020_800.0))))));
    let s2 = s * s;
    (s2 + odd * (1.0 - 2.0 * s2)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector width gives the scalar loop's floats, bit for bit, on rows of every tail
    /// length.
    #[test]
    fn every_width_gives_the_scalar_result() {
        for len in [1usize, 7, 8, 15, 16, 17, 63, 1000] {
            let row: Vec<f32> = (0..len).map(|i| (i as f32 * 0.731).sin() * 40.0).collect();
            let mut want = row.clone();
            for v in want.iter_mut() {
                *v += 0.37 * sin_squared(*v * 1.9);
            }
            let mut got = row.clone();
            snake_row(&mut got, 1.9, 0.37);
            assert_eq!(got, want, "len {len}");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                let mut got = row.clone();
                // SAFETY: checked above.
                unsafe { snake_row_avx2(&mut got, 1.9, 0.37) };
                assert_eq!(got, want, "avx2, len {len}");
            }
        }
    }

    #[test]
    fn sin_squared_is_accurate_over_a_wide_range() {
        let mut worst = 0.0f64;
        for i in -200_000..200_000 {
            let u = i as f32 * 0.013_7;
            let want = (u as f64).sin().powi(2);
            worst = worst.max((sin_squared(u) as f64 - want).abs());
        }
        assert!(worst < 1e-7, "worst error {worst}");
        for u in [0.0f32, 1e-30, -1e-30, 1e6, -3.0e5, f32::MIN_POSITIVE] {
            let want = (u as f64).sin().powi(2);
            assert!((sin_squared(u) as f64 - want).abs() < 1e-6, "u = {u}");
        }
    }
}
