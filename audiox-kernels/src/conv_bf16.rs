//! Convolutions over time with the kernel held in bf16, on the CPU's native bf16 products: Intel
//! AMX tiles, or AVX512-BF16 `vdpbf16ps` (two products per 32-bit lane, summed in f32), as
//! [`Bf16Kernel::current`] chooses.
//!
//! The same shifted-GEMM view as the f32 convolutions (`conv.rs`): output column `c` of a
//! stride-1 `conv1d` is `bias + sum_j W_j x[:, c + j * dilation - padding]`. Here every tap is
//! summed inside one output tile (AVX512-BF16: a register tile of 8 output channels x 32 output
//! columns) before the tile is written, so each output element is one f32 sum in a fixed order
//! (taps, then input-channel pairs): the result does not depend on the thread count.
//!
//! Operand layouts, both in pairs of input channels (`vdpbf16ps` multiplies the two bf16 halves
//! of a 32-bit lane with the two halves of the other operand's lane and adds both products):
//! * the kernel, packed per call: `[tap][row tile of 8 outputs][channel pair][8]` words, rows
//!   past the last output channel zero (a copy of the kernel's size; small next to the product,
//!   which reads each word once per output column);
//! * the input, packed per block of output columns: `[channel pair][column]` words, columns
//!   outside the input zero (the convolution's zero padding), SnakeBeta applied first when the
//!   convolution reads an activation. The activations are rounded to bf16 here (to nearest even).
//!
//! Where the CPU has AMX ([`crate::bf16::Bf16Kernel::Amx`]) the same sums run on bf16 tiles:
//! the kernel is then packed `[tap][output channel][channel pair]` (rows padded to 32, pairs to
//! 16, zero) and each 32 x 32 block of output sums every tap in the four accumulator tiles.
//!
//! `conv_transpose1d` (stride `s`) is the same product phase by phase: output column
//! `u = m * s + phi` sums `W_j^T x[:, m + d]` over the taps `j` with `phi + padding - j = d * s`,
//! i.e. a stride-1 convolution over the input with the phase's taps at offsets `d`.

use half::bf16;
use rayon::prelude::*;

use crate::amx;
use crate::bf16::Bf16Kernel;
use crate::send_ptr::SendPtr;

/// Output channels per register tile.
const MR: usize = 8;
/// Output columns per register tile (two 16-lane vectors).
const NR: usize = 32;
/// Output columns per parallel block, at most (the block's packed input stays in cache).
const MAX_BLOCK: usize = 256;

/// SnakeBeta's per-channel factors, applied to the input before the convolution.
pub(crate) struct SnakeFactors<'a> {
    pub freq: &'a [f32],
    pub inv_mag: &'a [f32],
}

/// Two bf16 in one 32-bit lane, `lo` in the low half.
fn pair(lo: bf16, hi: bf16) -> u32 {
    (lo.to_bits() as u32) | ((hi.to_bits() as u32) << 16)
}

/// Columns per parallel block: at most [`MAX_BLOCK`], small enough for about four blocks per
/// thread, a multiple of the tile width.
fn block_columns(columns: usize) -> usize {
    let per_thread = columns.div_ceil(4 * rayon::current_num_threads().max(1));
    per_thread.next_multiple_of(NR).clamp(NR, MAX_BLOCK)
}

/// A kernel packed for the register tiles (`[tap][row tile][pair][MR]`, AVX512-BF16) or the
/// AMX tiles (`[tap][row][pair]`, rows padded to 32 and pairs to 16).
struct PackedKernel {
    words: Vec<u32>,
    /// Output rows per tile: [`MR`] or [`amx::BLOCK`].
    rows_per_tile: usize,
    tiles: usize,
    /// Pairs per row (AMX: padded to a multiple of [`amx::PAIRS`]).
    pairs: usize,
    amx: bool,
}

impl PackedKernel {
    /// Packs `taps` taps of a `[rows, channels]` matrix each, element `(tap, row, channel)` read
    /// by `at`, for `kernel` (AMX or AVX512-BF16).
    fn new(
        kernel: Bf16Kernel,
        taps: usize,
        rows: usize,
        channels: usize,
        at: impl Fn(usize, usize, usize) -> bf16 + Sync,
    ) -> Self {
        let amx = kernel == Bf16Kernel::Amx;
        let rows_per_tile = if amx { amx::BLOCK } else { MR };
        let tiles = rows.div_ceil(rows_per_tile);
        let pairs = if amx {
            channels.div_ceil(2).next_multiple_of(amx::PAIRS)
        } else {
            channels.div_ceil(2)
        };
        let word = |tap: usize, row: usize, p: usize| {
            if row >= rows || 2 * p >= channels {
                return 0;
            }
            let hi = if 2 * p + 1 < channels {
                at(tap, row, 2 * p + 1)
            } else {
                bf16::ZERO
            };
            pair(at(tap, row, 2 * p), hi)
        };
        let mut words = vec![0u32; taps * tiles * pairs * rows_per_tile];
        words
            .par_chunks_mut(pairs * rows_per_tile)
            .enumerate()
            .for_each(|(tap_tile, chunk)| {
                let (tap, tile) = (tap_tile / tiles, tap_tile % tiles);
                let first = tile * rows_per_tile;
                if amx {
                    // [row][pair]
                    for (i, row) in chunk.chunks_exact_mut(pairs).enumerate() {
                        for (p, w) in row.iter_mut().enumerate() {
                            *w = word(tap, first + i, p);
                        }
                    }
                } else {
                    // [pair][row]
                    for (p, lanes) in chunk.chunks_exact_mut(MR).enumerate() {
                        for (i, w) in lanes.iter_mut().enumerate() {
                            *w = word(tap, first + i, p);
                        }
                    }
                }
            });
        PackedKernel {
            words,
            rows_per_tile,
            tiles,
            pairs,
            amx,
        }
    }

    /// The words of one tap's row tile.
    fn tile(&self, tap: usize, tile: usize) -> &[u32] {
        let len = self.pairs * self.rows_per_tile;
        &self.words[(tap * self.tiles + tile) * len..][..len]
    }

    /// One output tile: `rows_per_tile` rows x 32 columns, row-major in `out` (32 floats per
    /// row), summing every tap `(j, off)` over the packed input `input` (rows of `width` words,
    /// starting at the tile's first column).
    ///
    /// # Safety
    /// The CPU runs the kernel this was packed for; `input` holds columns `off..off + 32` of
    /// every pair row (`self.pairs` rows) for every tap offset; `tiles` is `Some` for AMX.
    unsafe fn product(
        &self,
        tiles: Option<&mut amx::Tiles>,
        tile: usize,
        taps: &[(usize, usize)],
        input: &[u32],
        width: usize,
        out: &mut [f32; amx::BLOCK * NR],
    ) {
        match tiles {
            Some(t) => {
                debug_assert!(self.amx);
                t.zero();
                for &(tap, off) in taps {
                    debug_assert!((self.pairs - 1) * width + off + NR <= input.len());
                    // SAFETY: the caller's bounds; 32 rows of `pairs` words in the kernel tile.
                    unsafe {
                        t.accumulate(
                            self.tile(tap, tile).as_ptr() as *const u8,
                            self.pairs * 4,
                            input.as_ptr().add(off) as *const u8,
                            width * 4,
                            self.pairs / amx::PAIRS,
                        );
                    }
                }
                t.store(out);
            }
            None => {
                // SAFETY: AVX512-BF16 and the bounds (caller).
                let acc = unsafe { native::tile(self, tile, taps, input, width) };
                out[..MR * NR].copy_from_slice(&acc);
            }
        }
    }
}

/// The AMX tiles of this thread for one parallel task, when the kernel is packed for them.
fn task_tiles(kernel: &PackedKernel) -> Option<amx::Tiles> {
    // SAFETY: a kernel is packed for AMX only when `amx::available()` (Bf16Kernel::current);
    // the task's code uses the tiles only through this value.
    kernel.amx.then(|| unsafe { amx::Tiles::new() })
}

/// Packs input columns `[first, first + width)` of one item `[channels, t]` (columns outside
/// `[0, t)` zero) into `[pair][width]` words in `dst` (`padded_pairs` rows, those past the
/// channels zero), SnakeBeta applied first when given. `rows` is a scratch buffer for two f32
/// rows.
#[allow(clippy::too_many_arguments)]
fn pack_input(
    x: &[f32],
    channels: usize,
    t: usize,
    first: isize,
    width: usize,
    padded_pairs: usize,
    snake: Option<&SnakeFactors<'_>>,
    rows: &mut Vec<f32>,
    dst: &mut Vec<u32>,
) {
    let pairs = channels.div_ceil(2);
    dst.clear();
    dst.resize(padded_pairs.max(pairs) * width, 0);
    rows.clear();
    rows.resize(2 * width, 0.0);
    // The part of the window inside the input.
    let lo = first.clamp(0, t as isize) as usize;
    let hi = (first + width as isize).clamp(0, t as isize) as usize;
    let at = (lo as isize - first) as usize;
    for p in 0..pairs {
        let (a, b) = rows.split_at_mut(width);
        for (half, row) in [a, b].into_iter().enumerate() {
            let ch = 2 * p + half;
            row.fill(0.0);
            if ch < channels && hi > lo {
                let valid = &mut row[at..at + (hi - lo)];
                valid.copy_from_slice(&x[ch * t + lo..ch * t + hi]);
                if let Some(act) = snake {
                    crate::snake::snake_row(valid, act.freq[ch], act.inv_mag[ch]);
                }
            }
        }
        let (a, b) = rows.split_at(width);
        interleave(a, b, &mut dst[p * width..(p + 1) * width]);
    }
}

/// `dst[i] = (bf16(b[i]) << 16) | bf16(a[i])`: two f32 rows rounded to bf16 (nearest even)
/// and interleaved into pair words; vectorised where the CPU has AVX512-BF16.
fn interleave(a: &[f32], b: &[f32], dst: &mut [u32]) {
    if crate::bf16::avx512_bf16() {
        // SAFETY: AVX512-F/BW/BF16 checked above.
        unsafe { native::interleave(a, b, dst) };
        return;
    }
    for ((d, &lo), &hi) in dst.iter_mut().zip(a).zip(b) {
        *d = pair(bf16::from_f32(lo), bf16::from_f32(hi));
    }
}

/// Stride-1 `conv1d` of `x` `[batch, cin, t]` with the bf16 kernel `w` `[cout, cin, k]`: the
/// output `[batch, cout, tout]` is written into `out` (overwritten, or added to when
/// `accumulate`), with the bias added. SnakeBeta is applied to the input first when given.
///
/// # Safety
/// `kernel` must be [`Bf16Kernel::Amx`] or [`Bf16Kernel::Avx512Bf16`] and supported by the CPU
/// ([`Bf16Kernel::current`]). `x`, `w`, `bias` and `out` must hold the sizes above, with
/// `tout = t + 2 * padding - dilation * (k - 1)` at least 1.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv1d(
    kernel: Bf16Kernel,
    x: &[f32],
    [batch, cin, t]: [usize; 3],
    w: &[bf16],
    [cout, k]: [usize; 2],
    bias: Option<&[f32]>,
    padding: usize,
    dilation: usize,
    snake: Option<SnakeFactors<'_>>,
    out: &mut [f32],
    accumulate: bool,
) {
    let tout = t + 2 * padding - dilation * (k - 1);
    let kernel = PackedKernel::new(kernel, k, cout, cin, |j, o, c| w[(o * cin + c) * k + j]);
    let taps: Vec<(usize, usize)> = (0..k).map(|j| (j, j * dilation)).collect();
    let block = block_columns(tout);
    let reach = dilation * (k - 1);
    for item in 0..batch {
        let x_item = &x[item * cin * t..(item + 1) * cin * t];
        let out_item = SendPtr(out[item * cout * tout..].as_mut_ptr());
        (0..tout.div_ceil(block)).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(rows, packed), b| {
                let (c0, c1) = (b * block, ((b + 1) * block).min(tout));
                let width = (c1 - c0).next_multiple_of(NR) + reach;
                let first = c0 as isize - padding as isize;
                let pairs = kernel.pairs;
                pack_input(
                    x_item,
                    cin,
                    t,
                    first,
                    width,
                    pairs,
                    snake.as_ref(),
                    rows,
                    packed,
                );
                let out = out_item;
                let mut tiles = task_tiles(&kernel);
                let mut acc = [0f32; amx::BLOCK * NR];
                let rpt = kernel.rows_per_tile;
                for tile in 0..kernel.tiles {
                    for c in (c0..c1).step_by(NR) {
                        // SAFETY: the kernel's CPU features (caller); the packed input holds
                        // every column `c - c0 + offset + 0..NR` read here.
                        unsafe {
                            kernel.product(
                                tiles.as_mut(),
                                tile,
                                &taps,
                                &packed[c - c0..],
                                width,
                                &mut acc,
                            )
                        };
                        let cols = NR.min(c1 - c);
                        for i in 0..rpt.min(cout - tile * rpt) {
                            let row = tile * rpt + i;
                            let add = bias.map_or(0.0, |b| b[row]);
                            // SAFETY: row `row`, columns [c, c + cols) of this item's output:
                            // written by this block only.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(out.0.add(row * tout + c), cols)
                            };
                            let src = &acc[i * NR..i * NR + cols];
                            if accumulate {
                                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s + add);
                            } else {
                                dst.iter_mut().zip(src).for_each(|(d, s)| *d = s + add);
                            }
                        }
                    }
                }
            },
        );
    }
}

/// `conv_transpose1d` of `x` `[batch, cin, t]` with the bf16 kernel `w` `[cin, cout, k]`
/// (stride, padding removed from both ends): the output `[batch, cout, tout]` is written into
/// `out` with the bias added.
///
/// # Safety
/// As [`conv1d`], with `tout = (t - 1) * stride + k - 2 * padding` at least 1 and `stride > 0`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv_transpose1d(
    kernel: Bf16Kernel,
    x: &[f32],
    [batch, cin, t]: [usize; 3],
    w: &[bf16],
    [cout, k]: [usize; 2],
    bias: Option<&[f32]>,
    stride: usize,
    padding: usize,
    out: &mut [f32],
) {
    let tout = (t - 1) * stride + k - 2 * padding;
    let kernel = PackedKernel::new(kernel, k, cout, cin, |j, o, c| w[(c * cout + o) * k + j]);
    // Per output phase, its taps and their input offsets d (column m + d feeds column
    // m * stride + phase).
    let (s, pad) = (stride as isize, padding as isize);
    let phases: Vec<Vec<(usize, isize)>> = (0..s)
        .map(|phase| {
            (0..k)
                .filter(|&j| (phase + pad - j as isize).rem_euclid(s) == 0)
                .map(|j| (j, (phase + pad - j as isize).div_euclid(s)))
                .collect()
        })
        .collect();
    let offsets = phases.iter().flatten().map(|&(_, d)| d);
    let d_min = offsets.clone().min().unwrap_or(0);
    let d_max = offsets.max().unwrap_or(0);
    let phases: Vec<Vec<(usize, usize)>> = phases
        .into_iter()
        .map(|taps| {
            taps.into_iter()
                .map(|(j, d)| (j, (d - d_min) as usize))
                .collect()
        })
        .collect();
    let columns = tout.div_ceil(stride);
    let block = block_columns(columns);
    let reach = (d_max - d_min) as usize;
    for item in 0..batch {
        let x_item = &x[item * cin * t..(item + 1) * cin * t];
        let out_item = SendPtr(out[item * cout * tout..].as_mut_ptr());
        (0..columns.div_ceil(block)).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(rows, packed), b| {
                let (m0, m1) = (b * block, ((b + 1) * block).min(columns));
                let width = (m1 - m0).next_multiple_of(NR) + reach;
                let first = m0 as isize + d_min;
                let pairs = kernel.pairs;
                pack_input(x_item, cin, t, first, width, pairs, None, rows, packed);
                let out = out_item;
                let mut tiles = task_tiles(&kernel);
                let mut acc = [0f32; amx::BLOCK * NR];
                let rpt = kernel.rows_per_tile;
                for (phase, taps) in phases.iter().enumerate() {
                    for tile in 0..kernel.tiles {
                        for m in (m0..m1).step_by(NR) {
                            // SAFETY: the kernel's CPU features (caller); the packed input
                            // holds every column read.
                            unsafe {
                                kernel.product(
                                    tiles.as_mut(),
                                    tile,
                                    taps,
                                    &packed[m - m0..],
                                    width,
                                    &mut acc,
                                )
                            };
                            for i in 0..rpt.min(cout - tile * rpt) {
                                let row = tile * rpt + i;
                                let add = bias.map_or(0.0, |b| b[row]);
                                for (n, &v) in acc[i * NR..(i + 1) * NR].iter().enumerate() {
                                    let u = (m + n) * stride + phase;
                                    if m + n >= m1 || u >= tout {
                                        break;
                                    }
                                    // SAFETY: column u of this block's phase columns, inside
                                    // the item's output; written by this block only.
                                    unsafe { *out.0.add(row * tout + u) = v + add };
                                }
                            }
                        }
                    }
                }
            },
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{MR, NR, PackedKernel};
    use std::arch::x86_64::*;

    /// `dst[i] = (bf16(b[i]) << 16) | bf16(a[i])`: two f32 rows rounded to bf16 (nearest even,
    /// as `vcvtneps2bf16`) and interleaved into pair words.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn interleave(a: &[f32], b: &[f32], dst: &mut [u32]) {
        let n = dst.len().min(a.len()).min(b.len());
        let full = n / 16;
        for c in 0..full {
            // SAFETY: 16 values from 16c are in `a`, `b` and `dst`.
            unsafe {
                let lo: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(
                    a.as_ptr().add(16 * c),
                )));
                let hi: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(
                    b.as_ptr().add(16 * c),
                )));
                let words = _mm512_or_si512(
                    _mm512_cvtepu16_epi32(lo),
                    _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)),
                );
                _mm512_storeu_si512(dst.as_mut_ptr().add(16 * c) as *mut _, words);
            }
        }
        for i in 16 * full..n {
            dst[i] = super::pair(half::bf16::from_f32(a[i]), half::bf16::from_f32(b[i]));
        }
    }

    /// One register tile: `acc[i, n] = sum over taps (j, off), pairs p of
    /// kernel[j, tile, p, i] . input[p, off + n]`, for 8 rows and 32 columns.
    ///
    /// # Safety
    /// AVX512-BF16; `input` (rows of `width` words) holds columns `off..off + NR` of every pair
    /// row for every tap offset `off`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn tile(
        kernel: &PackedKernel,
        tile: usize,
        taps: &[(usize, usize)],
        input: &[u32],
        width: usize,
    ) -> [f32; MR * NR] {
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        let pairs = kernel.pairs;
        for &(tap, off) in taps {
            let a = kernel.tile(tap, tile).as_ptr();
            debug_assert!((pairs - 1) * width + off + NR <= input.len());
            // SAFETY: `off` is inside the input (caller).
            let b = unsafe { input.as_ptr().add(off) };
            for p in 0..pairs {
                // SAFETY: pair row p of the input has `width` words from `off` on (caller);
                // the kernel tile has MR words per pair.
                unsafe {
                    let row = b.add(p * width);
                    let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(row as *const _));
                    let b1: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(row.add(16) as *const _));
                    let w = a.add(p * MR);
                    for i in 0..MR {
                        let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*w.add(i) as i32));
                        acc0[i] = _mm512_dpbf16_ps(acc0[i], x, b0);
                        acc1[i] = _mm512_dpbf16_ps(acc1[i], x, b1);
                    }
                }
            }
        }
        let mut out = [0f32; MR * NR];
        for i in 0..MR {
            // SAFETY: row i of the tile has NR = 32 floats.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr().add(i * NR), acc0[i]);
                _mm512_storeu_ps(out.as_mut_ptr().add(i * NR + 16), acc1[i]);
            }
        }
        out
    }
}
