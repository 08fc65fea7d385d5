//! Softmax attention, one head per task.

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::send_ptr::SendPtr;
use crate::{flex_f32_strided, reference};

/// `softmax(q k^T * scale) v` for `q` `[B, H, N, d]`, `k` `[B, H, M, d]`, `v` `[B, H, M, dv]`
/// (`scale` defaults to `1 / sqrt(d)`), without mask. On the CPU backend each head is two GEMMs
/// and a row softmax in cache, heads in parallel, reading `q`, `k` and `v` through their strides
/// (the head-split views of a projection are not copied). The result is a `[B, H, N, dv]` view
/// of a `[B, N, H, dv]` buffer, so merging the heads afterwards is free. [`reference::attention`]
/// on other backends.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: Option<f64>) -> Tensor<4> {
    {
        let ([b, h, n, d], [kb, kh, m, kd], [vb, vh, vm, dv]) = (q.dims(), k.dims(), v.dims());
        let consistent = (kb, kh, kd) == (b, h, d) && (vb, vh, vm) == (b, h, m);
        if consistent && b * h * n * dv == 0 {
            // No output element (an empty batch, no heads, no queries or no value width): the
            // empty result, which burn's own attention refuses to compute for zero heads.
            return Tensor::zeros([b, h, n, dv], &q.device());
        }
    }
    let (Some(qf), Some(kf), Some(vf)) = (
        flex_f32_strided(&q),
        flex_f32_strided(&k),
        flex_f32_strided(&v),
    ) else {
        return reference::attention(q, k, v, scale);
    };
    let [b, h, n, d] = q.dims();
    let [kb, kh, m, kd] = k.dims();
    let [vb, vh, vm, dv] = v.dims();
    let consistent = (kb, kh, kd) == (b, h, d) && (vb, vh, vm) == (b, h, m);
    if !consistent || m == 0 || n == 0 || dv == 0 {
        return reference::attention(q, k, v, scale);
    }
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
    let mut out = vec![0.0f32; b * n * h * dv];
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..b * h).into_par_iter().for_each_init(
        || vec![0.0f32; n * m],
        |scores, head| {
            let (bi, hi) = (head / h, head % h);
            let qh = qf.base(&[bi, hi]);
            let kh = kf.base(&[bi, hi]);
            let vh = vf.base(&[bi, hi]);
            let out_ptr = &out_ptr;
            // SAFETY: `base` points inside each buffer and the strides address the described
            // `[N, d]`, `[M, d]`, `[M, dv]` matrices within it. Each task writes only its own
            // head's `[N, dv]` block of `out` (offset `head_index * dv`, row stride `H * dv`),
            // disjoint from every other task's, and `out` outlives the parallel loop.
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
                    qh,
                    qf.strides[3],
                    qf.strides[2],
                    kh,
                    kf.strides[2],
                    kf.strides[3],
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                for row in scores.chunks_exact_mut(m) {
                    softmax_row(row);
                }
                // out[b, :, h, :] = p v, rows `H * dv` apart
                gemm::gemm(
                    n,
                    dv,
                    m,
                    out_ptr.0.add((bi * n * h + hi) * dv),
                    1,
                    (h * dv) as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    m as isize,
                    vh,
                    vf.strides[3],
                    vf.strides[2],
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
    drop((qf, kf, vf));
    Tensor::<4>::from_data(TensorData::new(out, [b, n, h, dv]), &q.device()).swap_dims(1, 2)
}

fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { softmax_row_avx512(row) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { softmax_row_avx2(row) };
            return;
        }
    }
    softmax_row_generic(row);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn softmax_row_avx512(row: &mut [f32]) {
    softmax_row_generic(row);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_row_avx2(row: &mut [f32]) {
    softmax_row_generic(row);
}

/// Lanes of the softmax's running maximum and sum: each lane its own chain, so the loops
/// vectorise (one chain through the row would keep them scalar: float sums are not
/// reassociated), combined in a fixed order, so the result does not depend on the CPU.
const LANES: usize = 16;

#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sums = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, x) in sums.iter_mut().zip(chunk.iter_mut()) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    let mut sum = 0.0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    let sum = sums.iter().fold(sum, |a, &b| a + b);
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
