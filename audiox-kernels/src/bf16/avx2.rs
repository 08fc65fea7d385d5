//! The bf16-weight product on CPUs with AVX2 and FMA but no bf16 instructions (Haswell to
//! Alder Lake, Zen 1 to Zen 3): the weight is widened to f32 block by block while it is packed,
//! and multiplied by an f32 register tile at the full precision of the activations.
//!
//! The portable path ([`super::matmul_widened`]) widens the whole weight into a fresh f32 copy
//! for every product and hands it to the `gemm` crate, which packs it again: per DiT step that
//! is about 9 GB of f32 written and read twice beside the products themselves, and the fresh
//! allocations' pages faulted in. Here each task widens only the block it is about to use
//! (at most [`KC`] rows of [`GROUP`] panels of [`NR`] columns, 128 KiB of f32, kept in a
//! per-thread buffer sized for the L2 cache) and reads the weight's bf16 bytes once.
//!
//! Tiles are [`MR`] rows x [`NR`] columns: twelve 8-lane accumulators, two weight vectors and
//! one broadcast activation, 15 of the 16 AVX2 registers. Every output is one chain of fused
//! multiply-adds over the reduction in ascending order (the accumulators pass through the
//! output between blocks of [`KC`] rows unchanged), so the result does not depend on the block
//! sizes or the thread count. Work is split over output column groups only.

use std::arch::x86_64::*;

use half::bf16;
use rayon::prelude::*;

use crate::send_ptr::SendPtr;

/// Output columns per panel (two vectors of eight f32 lanes).
const NR: usize = 16;
/// Rows of activations per tile.
const MR: usize = 6;
/// Reduction rows per packed block (a tile's activations: `MR * KC` floats, 6 KiB).
const KC: usize = 256;
/// Panels per task at most (a packed block: `GROUP * KC * NR` floats, 128 KiB).
const GROUP: usize = 8;

/// Whether this CPU runs the kernel (AVX2 and FMA).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `out[m, n] = x[m, k] · w[k, n]`, row-major, `out` overwritten; `m`, `n`, `k` > 0.
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`available`]); the buffers sized as [`super::matmul`]
/// checks.
pub(super) unsafe fn matmul(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    let panels = n.div_ceil(NR);
    // At least four tasks per thread where the columns allow, for balance; the result does not
    // depend on the grouping.
    let threads = rayon::current_num_threads().max(1);
    let group = panels.div_ceil(4 * threads).clamp(1, GROUP);
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..panels.div_ceil(group)).into_par_iter().for_each_init(
        || vec![0f32; GROUP * KC * NR],
        |packed, task| {
            let first = task * group;
            let count = group.min(panels - first);
            let mut tile = [0f32; MR * NR];
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                // SAFETY: AVX2 (caller); `packed` holds GROUP >= count panels of KC rows.
                unsafe { pack(w, n, k0, kc, first * NR, count, packed) };
                let mut r = 0;
                while r < m {
                    let rows = MR.min(m - r);
                    for q in 0..count {
                        let c0 = (first + q) * NR;
                        let width = NR.min(n - c0);
                        // Row i of the tile is columns c0..c0 + width of output row r + i.
                        let row = |i: usize| {
                            // SAFETY: row r + i < m, columns c0..c0 + width < n of `out`,
                            // written by this task only.
                            unsafe {
                                std::slice::from_raw_parts_mut(
                                    out_ptr.get().add((r + i) * n + c0),
                                    width,
                                )
                            }
                        };
                        for i in 0..rows {
                            let t = &mut tile[i * NR..(i + 1) * NR];
                            if k0 == 0 {
                                t.fill(0.0);
                            } else {
                                t[..width].copy_from_slice(row(i));
                            }
                        }
                        // SAFETY: AVX2 and FMA (caller); rows r..r + rows of `x` hold columns
                        // k0..k0 + kc; panel q of `packed` holds kc rows of NR floats.
                        unsafe {
                            run_tile(
                                x.as_ptr().add(r * k + k0),
                                k,
                                rows,
                                kc,
                                packed.as_ptr().add(q * KC * NR),
                                &mut tile,
                            )
                        };
                        for i in 0..rows {
                            row(i).copy_from_slice(&tile[i * NR..i * NR + width]);
                        }
                    }
                    r += rows;
                }
            }
        },
    );
}

/// Widens rows `k0..k0 + kc` of the weight's columns `c0..c0 + 16 * count` into `count`
/// panels of [`KC`] rows of [`NR`] floats (`packed[q * KC * NR + p * NR + j]` is
/// `w[k0 + p][c0 + 16 q + j]`), zero past the last column.
///
/// # Safety
/// The CPU must have AVX2; `w` is `[k, n]` with `k0 + kc <= k`, `kc <= KC`; `packed` holds
/// `count * KC * NR` floats.
#[target_feature(enable = "avx2")]
unsafe fn pack(
    w: &[bf16],
    n: usize,
    k0: usize,
    kc: usize,
    c0: usize,
    count: usize,
    packed: &mut [f32],
) {
    for p in 0..kc {
        let src = &w[(k0 + p) * n..(k0 + p + 1) * n];
        for q in 0..count {
            let c = c0 + q * NR;
            let dst = &mut packed[q * KC * NR + p * NR..][..NR];
            if c + NR <= n {
                for half in 0..2 {
                    // SAFETY: eight bf16 from column c + 8 half of the row lie in `src`; eight
                    // floats from 8 half in `dst`.
                    unsafe {
                        let h = _mm_loadu_si128(src.as_ptr().add(c + 8 * half) as *const __m128i);
                        let f = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                        _mm256_storeu_ps(dst.as_mut_ptr().add(8 * half), _mm256_castsi256_ps(f));
                    }
                }
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = src.get(c + j).map_or(0.0, |v| v.to_f32());
                }
            }
        }
    }
}

/// `tile[i, j] += sum_p x[i * stride + p] · b[p * NR + j]` for `rows` (<= MR) rows, `kc`
/// reduction rows and one panel, in ascending `p`, one fused multiply-add at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `x` points at `rows` rows of `kc` floats `stride` apart;
/// `b` at `kc * NR` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn run_tile(
    x: *const f32,
    stride: usize,
    rows: usize,
    kc: usize,
    b: *const f32,
    tile: &mut [f32; MR * NR],
) {
    macro_rules! run {
        ($r:literal) => {
            // SAFETY: the caller's features and sizes.
            unsafe { kernel::<$r>(x, stride, kc, b, tile) }
        };
    }
    match rows {
        6 => run!(6),
        5 => run!(5),
        4 => run!(4),
        3 => run!(3),
        2 => run!(2),
        _ => run!(1),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(
    x: *const f32,
    stride: usize,
    kc: usize,
    b: *const f32,
    tile: &mut [f32; MR * NR],
) {
    let t = tile.as_mut_ptr();
    let mut acc0 = [_mm256_setzero_ps(); R];
    let mut acc1 = [_mm256_setzero_ps(); R];
    for i in 0..R {
        // SAFETY: row i < MR of the tile holds NR = 16 floats.
        unsafe {
            acc0[i] = _mm256_loadu_ps(t.add(i * NR));
            acc1[i] = _mm256_loadu_ps(t.add(i * NR + 8));
        }
    }
    for p in 0..kc {
        // SAFETY: `b` holds kc rows of NR floats; `x` holds R rows of kc floats (caller).
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            for i in 0..R {
                let a = _mm256_broadcast_ss(&*x.add(i * stride + p));
                acc0[i] = _mm256_fmadd_ps(a, b0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(a, b1, acc1[i]);
            }
        }
    }
    for i in 0..R {
        // SAFETY: as above.
        unsafe {
            _mm256_storeu_ps(t.add(i * NR), acc0[i]);
            _mm256_storeu_ps(t.add(i * NR + 8), acc1[i]);
        }
    }
}
