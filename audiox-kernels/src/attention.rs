//! Softmax attention, one head per task.

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::{flex_f32, reference, values};

/// `softmax(q k^T * scale) v` for `q` `[B, H, N, d]`, `k` `[B, H, M, d]`, `v` `[B, H, M, dv]`
/// (`scale` defaults to `1 / sqrt(d)`), without mask. On the CPU backend each head is two GEMMs
/// and a row softmax in cache, heads in parallel; [`reference::attention`] elsewhere.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: Option<f64>) -> Tensor<4> {
    let (Some(qf), Some(kf), Some(vf)) = (flex_f32(&q), flex_f32(&k), flex_f32(&v)) else {
        return reference::attention(q, k, v, scale);
    };
    let [b, h, n, d] = q.dims();
    let [kb, kh, m, kd] = k.dims();
    let [vb, vh, vm, dv] = v.dims();
    if (kb, kh, kd) != (b, h, d) || (vb, vh, vm) != (b, h, m) || m == 0 || n == 0 {
        return reference::attention(q, k, v, scale);
    }
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
    let (qs, ks, vs) = (values(&qf), values(&kf), values(&vf));
    let mut out = vec![0.0f32; b * h * n * dv];
    out.par_chunks_mut(n * dv).enumerate().for_each_init(
        || vec![0.0f32; n * m],
        |scores, (head, o)| {
            let qh = &qs[head * n * d..(head + 1) * n * d];
            let kh = &ks[head * m * d..(head + 1) * m * d];
            let vh = &vs[head * m * dv..(head + 1) * m * dv];
            // SAFETY: the slices hold exactly the described matrices.
            unsafe {
                // scores[N, M] = scale * q k^T
                gemm::gemm(
                    n,
                    m,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    m as isize,
                    false,
                    qh.as_ptr(),
                    1,
                    d as isize,
                    kh.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in scores.chunks_exact_mut(m) {
                softmax_row(row);
            }
            // SAFETY: as above.
            unsafe {
                // o[N, dv] = p v
                gemm::gemm(
                    n,
                    dv,
                    m,
                    o.as_mut_ptr(),
                    1,
                    dv as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    m as isize,
                    vh.as_ptr(),
                    1,
                    dv as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    Tensor::from_data(TensorData::new(out, [b, h, n, dv]), &q.device())
}

fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { softmax_row_avx2(row) };
        return;
    }
    softmax_row_generic(row);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_row_avx2(row: &mut [f32]) {
    softmax_row_generic(row);
}

#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0.0f32;
    for x in row.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `e^x` for f32, branch-free (so the loop vectorises), within 2 ulp: `x = n ln2 + r` with
/// `|r| <= ln2 / 2`, a degree-7 polynomial for `e^r`, `2^n` from the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // The integer n sits in the low mantissa bits of `shifted`.
    let ni = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    p * f32::from_bits(((ni + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }
}
