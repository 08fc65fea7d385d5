//! A matrix product with the weight held in bf16: `out[m, n] = x[m, k] · w[k, n]`, `x` in f32.
//!
//! The weight is rounded to bf16 once (round to nearest even) and stored in a packed layout
//! ([`PackedBf16`]), half the memory of f32. Where the CPU has AVX512-BF16, each product runs on
//! the native `vdpbf16ps` dot product: the activations are rounded to bf16 too and every pair
//! of products is accumulated in f32 (twice the multiply rate of f32 FMA on the same vectors).
//! Elsewhere the weight is widened back to f32 one product at a time and multiplied by the
//! `gemm` crate at full f32 precision of the activations, so the two paths differ by the
//! rounding of the activations only.
//!
//! Work is split over output column panels, never over the reduction, so the result does not
//! depend on the thread count.

use half::bf16;
use rayon::prelude::*;

/// Output columns per packed panel (two 16-lane vectors of f32 accumulators).
const NR: usize = 32;
/// Rows of `x` per micro-kernel call.
const MR: usize = 8;

/// A weight `[k, n]` (burn's `Linear` layout: `[d_input, d_output]`) rounded to bf16 and packed
/// for the product: panels of 32 output columns; inside a panel, for each pair of rows
/// `(2p, 2p + 1)` of the weight, 32 lanes of two bf16 each (the row-`2p` value in the low half).
/// `k` is padded to even and `n` to a multiple of 32 with zeros.
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    k: usize,
    n: usize,
    /// `panels * (k_pairs * NR)` words of two bf16.
    data: Vec<u32>,
}

fn pair(lo: bf16, hi: bf16) -> u32 {
    (lo.to_bits() as u32) | ((hi.to_bits() as u32) << 16)
}

impl PackedBf16 {
    /// Rounds a row-major f32 weight `[k, n]` to bf16 and packs it.
    ///
    /// # Panics
    /// If `w.len() != k * n`.
    pub fn from_f32(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(
            w.len(),
            k * n,
            "weight of {} values is not [{k}, {n}]",
            w.len()
        );
        Self::pack(k, n, |r, c| bf16::from_f32(w[r * n + c]))
    }

    /// Packs a row-major bf16 weight `[k, n]` (no rounding: the values are kept as they are).
    ///
    /// # Panics
    /// If `w.len() != k * n`.
    pub fn from_bf16(w: &[bf16], k: usize, n: usize) -> Self {
        assert_eq!(
            w.len(),
            k * n,
            "weight of {} values is not [{k}, {n}]",
            w.len()
        );
        Self::pack(k, n, |r, c| w[r * n + c])
    }

    fn pack(k: usize, n: usize, at: impl Fn(usize, usize) -> bf16 + Sync) -> Self {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * pairs * NR];
        if pairs > 0 {
            data.par_chunks_mut(pairs * NR)
                .enumerate()
                .for_each(|(panel, out)| {
                    for p in 0..pairs {
                        for j in 0..NR {
                            let c = panel * NR + j;
                            if c >= n {
                                continue;
                            }
                            let lo = at(2 * p, c);
                            let hi = if 2 * p + 1 < k {
                                at(2 * p + 1, c)
                            } else {
                                bf16::ZERO
                            };
                            out[p * NR + j] = pair(lo, hi);
                        }
                    }
                });
        }
        Self { k, n, data }
    }

    /// Rows of the weight (the product's reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the weight (the product's output width).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes held (the packed bf16 values, padding included).
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// The weight widened back to row-major f32 `[k, n]` (exact: bf16 -> f32 loses nothing).
    pub fn to_f32(&self) -> Vec<f32> {
        let pairs = self.k.div_ceil(2);
        let mut w = vec![0f32; self.k * self.n];
        for (r, row) in w.chunks_mut(self.n.max(1)).enumerate().take(self.k) {
            let (p, shift) = (r / 2, 16 * (r % 2));
            for (c, v) in row.iter_mut().enumerate() {
                let word = self.data[(c / NR) * pairs * NR + p * NR + c % NR];
                *v = bf16::from_bits((word >> shift) as u16).to_f32();
            }
        }
        w
    }

    /// `out[m, n] = x[m, k] · w`, row-major, `out` overwritten. Native bf16 dot products where
    /// the CPU has AVX512-BF16 (activations rounded to bf16, f32 accumulation), the widened
    /// weight through an f32 GEMM elsewhere.
    ///
    /// # Panics
    /// If `x.len() != m * k` or `out.len() != m * n`.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "input is not [{m}, {}]", self.k);
        assert_eq!(out.len(), m * self.n, "output is not [{m}, {}]", self.n);
        if m == 0 || self.n == 0 {
            return;
        }
        if self.k == 0 {
            out.fill(0.0);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if native_available() {
            // SAFETY: the CPU has the features the kernel is compiled for (checked above).
            unsafe { self.matmul_native(x, m, out) };
            return;
        }
        self.matmul_widened(x, m, out);
    }

    /// The portable path: the weight widened to f32 (one transient copy), then `gemm`.
    pub fn matmul_widened(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "input is not [{m}, {}]", self.k);
        assert_eq!(out.len(), m * self.n, "output is not [{m}, {}]", self.n);
        if m == 0 || self.n == 0 {
            return;
        }
        let w = self.to_f32();
        let (k, n) = (self.k, self.n);
        let threads = rayon::current_num_threads();
        // SAFETY: row-major [m, k] x [k, n] -> [m, n], strides within the three buffers.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                },
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn matmul_native(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let pairs = self.k.div_ceil(2);
        // The activations as bf16 pairs, row-major [m, pairs] (odd k padded with a zero).
        let mut xa = vec![0u32; m * pairs];
        xa.par_chunks_mut(pairs)
            .zip(x.par_chunks(self.k))
            .for_each(|(dst, src)| {
                // SAFETY: same features as the caller.
                unsafe { native::round_row(src, dst) }
            });
        let n = self.n;
        let panels = n.div_ceil(NR);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let xa = &xa;
        (0..panels).into_par_iter().for_each(|panel| {
            let b = &self.data[panel * pairs * NR..(panel + 1) * pairs * NR];
            let c0 = panel * NR;
            let width = NR.min(n - c0);
            let mut r = 0;
            while r < m {
                let rows = MR.min(m - r);
                let mut tile = [0f32; MR * NR];
                // SAFETY: same features as the caller; slices cover `rows` rows of `pairs`.
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
                    // SAFETY: row r+i, columns c0..c0+width of `out`, owned by this panel only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add((r + i) * n + c0), width)
                    };
                    dst.copy_from_slice(&tile[i * NR..i * NR + width]);
                }
                r += rows;
            }
        });
    }
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
