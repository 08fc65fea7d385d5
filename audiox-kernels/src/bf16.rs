//! A matrix product with the weight held in bf16: `out[m, n] = x[m, k] · w[k, n]`, `x` in f32.
//!
//! The weight is held in bf16 (half the memory of f32), row-major as burn holds a `Linear`
//! weight (`[d_input, d_output]`). Where the CPU has AVX512-BF16, the product runs on the native
//! `vdpbf16ps` dot product: the activations are rounded to bf16 too (to nearest even) and every
//! pair of products is accumulated in f32, at twice the multiply rate of f32 FMA on the same
//! vectors; the weight is packed panel by panel into the layout the kernel reads (32 columns at
//! a time, a copy that is small next to the product). Elsewhere the weight is widened back to
//! f32 for the product and multiplied by the `gemm` crate at the full f32 precision of the
//! activations, so the two paths differ by the rounding of the activations only.
//!
//! Work is split over output column panels, never over the reduction, so the result does not
//! depend on the thread count.

use burn::backend::Flex;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Output columns per packed panel (two 16-lane vectors of f32 accumulators).
const NR: usize = 32;
/// Rows of `x` per micro-kernel call.
const MR: usize = 8;

/// Two bf16 in one 32-bit lane, `lo` in the low half (the element `vdpbf16ps` pairs first).
fn pair(lo: bf16, hi: bf16) -> u32 {
    (lo.to_bits() as u32) | ((hi.to_bits() as u32) << 16)
}

/// `out[m, n] = x[m, k] · w[k, n]`, row-major, `out` overwritten. Native bf16 dot products where
/// the CPU has AVX512-BF16 (activations rounded to bf16, f32 accumulation); elsewhere the
/// weight widened to f32 through the `gemm` crate ([`matmul_widened`]).
///
/// # Panics
/// If `x.len() != m * k`, `w.len() != k * n` or `out.len() != m * n`.
pub fn matmul(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    check(x, m, w, k, n, out);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if native_available() {
        // SAFETY: the CPU has the features the kernel is compiled for (checked above).
        unsafe { matmul_native(x, m, w, k, n, out) };
        return;
    }
    matmul_widened(x, m, w, k, n, out);
}

fn check(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &[f32]) {
    assert_eq!(
        x.len(),
        m * k,
        "input of {} values is not [{m}, {k}]",
        x.len()
    );
    assert_eq!(
        w.len(),
        k * n,
        "weight of {} values is not [{k}, {n}]",
        w.len()
    );
    assert_eq!(
        out.len(),
        m * n,
        "output of {} values is not [{m}, {n}]",
        out.len()
    );
}

/// The portable path of [`matmul`]: the weight widened to f32 (one transient copy), then the
/// `gemm` crate at the full f32 precision of the activations.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_widened(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    check(x, m, w, k, n, out);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let mut wide = vec![0f32; w.len()];
    wide.par_chunks_mut(1 << 16)
        .zip(w.par_chunks(1 << 16))
        .for_each(|(o, i)| i.convert_to_f32_slice(o));
    crate::gemm_f32(m, n, k, x, &wide, out);
}

/// The native path: the activations rounded to bf16 pairs once; then per panel of 32 output
/// columns (one task each) the panel of the weight packed into pairs of rows (lane j holds
/// `(w[2p][j], w[2p+1][j])`, odd `k` padded with a zero) and multiplied by 8-row tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn matmul_native(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    let pairs = k.div_ceil(2);
    let mut xa = vec![0u32; m * pairs];
    xa.par_chunks_mut(pairs)
        .zip(x.par_chunks(k))
        .for_each(|(dst, src)| {
            // SAFETY: same features as the caller.
            unsafe { native::round_row(src, dst) }
        });
    let panels = n.div_ceil(NR);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let xa = &xa;
    (0..panels).into_par_iter().for_each_init(
        || vec![0u32; pairs * NR],
        |b, panel| {
            let c0 = panel * NR;
            let width = NR.min(n - c0);
            for (p, lanes) in b.chunks_mut(NR).enumerate() {
                let lo = &w[2 * p * n + c0..][..width];
                let hi = (2 * p + 1 < k).then(|| &w[(2 * p + 1) * n + c0..][..width]);
                for (j, lane) in lanes.iter_mut().enumerate() {
                    *lane = if j < width {
                        pair(lo[j], hi.map_or(bf16::ZERO, |h| h[j]))
                    } else {
                        0
                    };
                }
            }
            let mut r = 0;
            while r < m {
                let rows = MR.min(m - r);
                let mut tile = [0f32; MR * NR];
                // SAFETY: same features as the caller; the slice holds `rows` rows of `pairs`.
                unsafe {
                    native::tile(
                        &xa[r * pairs..(r + rows) * pairs],
                        rows,
                        pairs,
                        b,
                        &mut tile,
                    )
                };
                for i in 0..rows {
                    // SAFETY: row r+i, columns c0..c0+width of `out`, written by this task only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add((r + i) * n + c0), width)
                    };
                    dst.copy_from_slice(&tile[i * NR..i * NR + width]);
                }
                r += rows;
            }
        },
    );
}

/// `x · w + bias` for a `Linear` whose weight `w` `[k, n]` is held in bf16 on the flex backend
/// (any leading axes of `x`; the bias, if any, in f32 or bf16). `None` when this kernel does not
/// apply (another backend, `x` not a contiguous f32 tensor, `w` not a contiguous bf16 tensor):
/// the caller then takes the generic path (widen the weight, burn's matmul).
pub fn linear<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    let xf = crate::flex_f32(x)?;
    let wf = w.clone().try_into_primitive::<Flex>().ok()?;
    if wf.dtype() != DType::BF16 {
        return None;
    }
    let weight = wf.as_slice::<bf16>()?;
    let [k, n] = w.dims();
    let dims = x.dims();
    if dims[D - 1] != k {
        return None;
    }
    let m: usize = dims[..D - 1].iter().product();
    let mut out = vec![0f32; m * n];
    matmul(crate::values(&xf), m, weight, k, n, &mut out);
    if let Some(b) = bias {
        let b: Vec<f32> = b
            .clone()
            .cast(FloatDType::F32)
            .into_data()
            .try_into_vec::<f32>()
            .ok()?;
        if b.len() != n {
            return None;
        }
        out.par_chunks_mut(n.max(1))
            .for_each(|row| row.iter_mut().zip(&b).for_each(|(o, b)| *o += b));
    }
    let mut shape = dims;
    shape[D - 1] = n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// Whether this CPU runs the native bf16 kernel (AVX512-BF16 with AVX512-F/BW).
pub fn native_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each task writes a disjoint set of output elements.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// One row of f32 rounded to bf16 pairs (round to nearest even, as `cvtne2ps2bf16`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round_row(src: &[f32], dst: &mut [u32]) {
        let k = src.len();
        let full = k / 32;
        for c in 0..full {
            // SAFETY: 32 values from 32c are in `src`; 16 words from 16c are in `dst`.
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(32 * c));
                let hi = _mm512_loadu_ps(src.as_ptr().add(32 * c + 16));
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(16 * c) as *mut _, v);
            }
        }
        for p in 16 * full..dst.len() {
            let lo = half::bf16::from_f32(src[2 * p]);
            let hi = src
                .get(2 * p + 1)
                .map_or(half::bf16::ZERO, |&v| half::bf16::from_f32(v));
            dst[p] = super::pair(lo, hi);
        }
    }

    /// `tile[i, j] = sum_p x[i, p] · b[p, j]` for `rows` (<= MR) rows and one 32-column panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn tile(
        x: &[u32],
        rows: usize,
        pairs: usize,
        b: &[u32],
        tile: &mut [f32; MR * NR],
    ) {
        macro_rules! run {
            ($r:literal) => {
                // SAFETY: same features; `x` holds $r rows of `pairs` words.
                unsafe { kernel::<$r>(x, pairs, b, tile) }
            };
        }
        match rows {
            8 => run!(8),
            7 => run!(7),
            6 => run!(6),
            5 => run!(5),
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn kernel<const R: usize>(
        x: &[u32],
        pairs: usize,
        b: &[u32],
        tile: &mut [f32; MR * NR],
    ) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        let bp = b.as_ptr();
        let xp = x.as_ptr();
        for p in 0..pairs {
            // SAFETY: b holds `pairs` rows of NR words; x holds R rows of `pairs` words.
            unsafe {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR) as *const _));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR + 16) as *const _));
                for i in 0..R {
                    let a: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*xp.add(i * pairs + p) as i32));
                    acc0[i] = _mm512_dpbf16_ps(acc0[i], a, b0);
                    acc1[i] = _mm512_dpbf16_ps(acc1[i], a, b1);
                }
            }
        }
        for i in 0..R {
            // SAFETY: row i of the tile has NR = 32 floats.
            unsafe {
                _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR), acc0[i]);
                _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + 16), acc1[i]);
            }
        }
    }
}
