//! int8 weights held **transposed**: the logical `[k, n]` weight's values stored `[n, k]` (one
//! row of `k` bytes per output column), a strided view burn describes exactly (strides
//! `[1, k]` on the quantised tensor's values), with the same block scales as the row-major
//! weight. The same idea as `bf16::hold_transposed`, for the same reason.
//!
//! Why: the AMX path of [`super::matmul_view`] repacks every 32-column panel of the row-major
//! weight into groups of four rows (and sums its columns) for every product; in an int8 DiT
//! step that packing took 18 % of the samples (`perf`, 2026-12-02, Intel Xeon with AMX), as
//! much as the tile products themselves. Transposed, each 16-row tile of the weight is 16 rows
//! of 64 contiguous bytes that `tileloadd` reads where they lie: the weight is the tiles' left
//! operand, the activations (quantised per token to signed bytes, transposed once per
//! product: a small copy) the right one, and `tdpbssd` (signed x signed) needs no column sums.
//! The exact integer sums per scale block are those of the VNNI and row-major AMX paths and
//! are turned into floats in the same order of operations, so the result is the same bit for
//! bit.
//!
//! The AVX512-VNNI kernel packs its panels (words of four rows, 32 columns) for every product
//! either way; from the row-major values that reads 32 bytes from each of `k` rows far apart,
//! and on an AMD Zen 4 it took 13 % of an int8 DiT step's samples (`perf`, 2026-12-04). From
//! the transposed values a panel is 32 rows read front to back and transposed 16 x 16 words at
//! a time in registers (the same panel and column sums, so the same floats). The AVX2 and
//! AVX-VNNI kernels do the same for their 16-column panels (16 rows, 8 x 8 word transposes):
//! on two AMD Zen 3 VMs the row-major packing took 9-12 % of an int8 DiT step's samples
//! (`perf`, 2026-12-07; 2.4 % from the transposed values).
//!
//! Chosen at load ([`prefers_transposed`]) where the process's int8 kernel is any of these
//! (not the dequantised path) and the sizes fit the tiles; a kernel handed a transposed weight
//! whose sizes do not fit reads it through a row-major copy ([`matmul_transposed_with`]):
//! correct, not faster.

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::{Int8Kernel, QuantizedView, SendPtr};

/// The reduction length and the scale blocks must be multiples of this (one AMX int8 tile
/// step: 64 input channels).
pub const TRANSPOSED_ROWS: usize = 64;
/// The output channels must be a multiple of this (the 32 rows of the weight per block).
pub const TRANSPOSED_COLUMNS: usize = 32;

/// Tokens per task at most (8 blocks of 32).
#[cfg(target_arch = "x86_64")]
const SLAB: usize = 256;

/// Column blocks of 32 per task at most.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 4;

/// A weight `[k, n]` quantised to int8, borrowed from wherever it is held, its values stored
/// transposed: `qt[c * k + r]` holds `q[r, c]`; the scales laid out as [`QuantizedView`]'s,
/// `scale[(r / block) * n + c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransposedView<'a> {
    k: usize,
    n: usize,
    block: usize,
    qt: &'a [i8],
    scale: &'a [f32],
}

impl<'a> TransposedView<'a> {
    /// A view of `qt` (`n * k` values, `[n, k]` row-major) and `scale` (`k.div_ceil(block) *
    /// n`) with `block >= 1`. `None` when they do not fit together.
    pub fn from_parts(
        k: usize,
        n: usize,
        block: usize,
        qt: &'a [i8],
        scale: &'a [f32],
    ) -> Option<Self> {
        (block >= 1 && qt.len() == k * n && scale.len() == k.div_ceil(block) * n).then_some(Self {
            k,
            n,
            block,
            qt,
            scale,
        })
    }

    /// Rows of the logical weight (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the logical weight (output channels).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Rows per scale block.
    pub fn block(&self) -> usize {
        self.block
    }

    /// The values, `qt[c * k + r]`.
    pub fn values(&self) -> &'a [i8] {
        self.qt
    }

    /// The scales, `scale[(r / block) * n + c]`.
    pub fn scales(&self) -> &'a [f32] {
        self.scale
    }

    /// The same weight with its values copied back to row-major `[k, n]`.
    pub fn to_row_major(&self) -> super::QuantizedWeight {
        super::QuantizedWeight {
            k: self.k,
            n: self.n,
            block: self.block,
            q: transpose(self.qt, self.n, self.k),
            scale: self.scale.to_vec(),
        }
    }
}

/// Whether an int8 matmul weight `[k, n]` with scale blocks of `block` rows is best held
/// transposed on this process's kernel: the kernel is AMX, AVX512-VNNI, AVX-VNNI or AVX2 (every
/// kernel but the dequantised one), `k` and the blocks (unless one block covers all rows) are
/// multiples of [`TRANSPOSED_ROWS`], `n` of [`TRANSPOSED_COLUMNS`].
pub fn prefers_transposed(k: usize, n: usize, block: usize) -> bool {
    Int8Kernel::current() != Int8Kernel::Dequantized && fits_tiles(k, n, block)
}

fn fits_tiles(k: usize, n: usize, block: usize) -> bool {
    k > 0
        && n > 0
        && k.is_multiple_of(TRANSPOSED_ROWS)
        && n.is_multiple_of(TRANSPOSED_COLUMNS)
        && (block >= k || (block > 0 && block.is_multiple_of(TRANSPOSED_ROWS)))
}

/// `q` (`rows * cols` values, row-major) transposed: `out[c * rows + r] = q[r * cols + c]`
/// ([`crate::transpose`] on i8 values).
///
/// # Panics
/// If `q.len() != rows * cols`.
pub fn transpose(q: &[i8], rows: usize, cols: usize) -> Vec<i8> {
    crate::transpose(q, rows, cols)
}

/// The values of a quantised weight `[.., n]` (read as `[k, n]`; `q` row-major) held
/// transposed: an i8 tensor of logical shape `dims` whose buffer is `[n, k]`, the strided
/// layout [`transposed_values`] recognises. For the quantised tensor's values on burn's CPU
/// backend (the caller wraps it with the scales).
///
/// # Panics
/// If `q.len()` is not the product of `dims`.
pub fn hold_values_transposed<const W: usize>(q: &[i8], dims: [usize; W]) -> FlexTensor {
    let n = dims[W - 1];
    let k: usize = dims[..W - 1].iter().product();
    hold_transposed_values(transpose(q, k, n), dims)
}

/// [`hold_values_transposed`] for values already transposed: `qt` is the `[n, k]` buffer
/// (`qt[c * k + r]` = value `[r, c]` of the logical weight), taken as it is.
///
/// # Panics
/// If `qt.len()` is not the product of `dims`.
pub fn hold_transposed_values<const W: usize>(qt: Vec<i8>, dims: [usize; W]) -> FlexTensor {
    assert_eq!(
        qt.len(),
        dims.iter().product::<usize>(),
        "{} values for {dims:?}",
        qt.len()
    );
    let len = qt.len();
    let (bytes, _, _) = TensorData::new(qt, [len]).into_parts();
    FlexTensor::new(bytes, transposed_layout(dims), DType::I8)
}

/// The strided layout of a weight `dims` (`[.., n]`) stored `[n, k]`: the leading axes
/// contiguous among themselves, the last one `k` apart.
fn transposed_layout<const W: usize>(dims: [usize; W]) -> Layout {
    let k: usize = dims[..W - 1].iter().product();
    let mut strides = vec![0isize; W];
    strides[W - 1] = k as isize;
    let mut inner = 1usize;
    for axis in (0..W - 1).rev() {
        strides[axis] = inner as isize;
        inner *= dims[axis];
    }
    Layout::new(dims.to_vec().into(), strides, 0)
}

/// The `[n, k]` buffer of the i8 values `t` of a quantised weight held transposed
/// ([`hold_values_transposed`]), or `None` for any other layout or dtype.
pub fn transposed_values(t: &FlexTensor) -> Option<&[i8]> {
    let dims = t.layout().shape().to_vec();
    let w = dims.len();
    if w < 2 || t.dtype() != DType::I8 {
        return None;
    }
    let k: usize = dims[..w - 1].iter().product();
    let n = dims[w - 1];
    let layout = t.layout();
    let strides = layout.strides();
    if layout.start_offset() != 0 || k == 0 || strides[w - 1] != k as isize {
        return None;
    }
    let mut inner = 1usize;
    for axis in (0..w - 1).rev() {
        if strides[axis] != inner as isize {
            return None;
        }
        inner *= dims[axis];
    }
    let values = t.storage::<i8>();
    (values.len() >= k * n).then(|| &values[..k * n])
}

/// `out[m, n] = x[m, k] · w` for a weight held transposed, on this process's kernel
/// ([`Int8Kernel::current`]).
///
/// # Panics
/// If `x.len() != m * k`, `out.len() != m * n` or `k > MAX_K`.
pub fn matmul_transposed(x: &[f32], m: usize, w: TransposedView<'_>, out: &mut [f32]) {
    matmul_transposed_with(Int8Kernel::current(), x, m, w, out);
}

/// [`matmul_transposed`] on a given kernel. When the sizes fit the tiles (see
/// [`prefers_transposed`]) AMX multiplies the transposed weight where it lies and AVX512-VNNI,
/// AVX-VNNI and AVX2 pack their panels from it; otherwise the values are copied back to
/// row-major for [`super::matmul_view_with`]. Either way the result is exactly that kernel's
/// on the row-major weight (for every integer kernel, the same floats).
///
/// # Panics
/// As [`matmul_transposed`].
pub fn matmul_transposed_with(
    kernel: Int8Kernel,
    x: &[f32],
    m: usize,
    w: TransposedView<'_>,
    out: &mut [f32],
) {
    let row_major = QuantizedView {
        k: w.k,
        n: w.n,
        block: w.block,
        q: w.qt,
        scale: w.scale,
    };
    // The transposed values have the row-major ones' count.
    super::check(x, m, row_major, out);
    if m == 0 || w.n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Int8Kernel::Amx && kernel.is_supported() && fits_tiles(w.k, w.n, w.block) {
        // SAFETY: AMX int8 and AVX512-VNNI are available (checked); the sizes fit the tiles.
        return unsafe { matmul_amx(x, m, w, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Int8Kernel::Vnni && super::native_available() && fits_tiles(w.k, w.n, w.block) {
        let (qt, k) = (w.qt, w.k);
        let pack = move |c0, _groups, block_groups, b: &mut [u32], colsum: &mut [i32]| {
            // SAFETY: AVX512-F/BW/VNNI (checked above); `k` a multiple of 64 and `n` of 32
            // (`fits_tiles`), so every panel is whole; one panel's buffers (`run_panels`).
            unsafe { super::native::pack_panel_transposed(qt, k, c0, block_groups, b, colsum) }
        };
        // SAFETY: as above; the sizes and scales of `row_major` are the weight's (its values
        // are read only through `pack`), and the panel is the VNNI family's.
        return unsafe { super::run_panels(&super::Vnni, x, m, row_major, out, pack) };
    }
    // The AVX2 family where `matmul_view_with` would take it: its own kernels, and AMX or VNNI
    // on a CPU without AVX512-VNNI.
    #[cfg(target_arch = "x86_64")]
    if match kernel {
        Int8Kernel::Dequantized => false,
        Int8Kernel::Amx | Int8Kernel::Vnni => !super::native_available(),
        Int8Kernel::AvxVnni | Int8Kernel::Avx2 => true,
    } && super::avx2::available()
        && fits_tiles(w.k, w.n, w.block)
    {
        let vnni = kernel != Int8Kernel::Avx2 && super::avx2::vnni_available();
        let family = super::avx2::Avx2 { vnni };
        let (qt, k) = (w.qt, w.k);
        let pack = move |c0, _groups, _block_groups, b: &mut [u32], _colsum: &mut [i32]| {
            // SAFETY: AVX2 (checked above); `k` a multiple of 64 and `n` of 32 (`fits_tiles`),
            // so every 16-column panel is whole; one panel's buffer (`run_panels`).
            unsafe { super::avx2::pack_panel_transposed(qt, k, c0, b) }
        };
        // SAFETY: AVX2, and AVX-VNNI when `vnni` (checked above); the sizes and scales of
        // `row_major` are the weight's (its values are read only through `pack`), and the
        // panel is the AVX2 family's.
        return unsafe { super::run_panels(&family, x, m, row_major, out, pack) };
    }
    let copy = w.to_row_major();
    super::matmul_view_with(kernel, x, m, copy.view(), out);
}

/// The AMX product on a transposed weight: per token the scale (as the other paths) and the
/// activations quantised to signed bytes, laid out `[k / 4, mp]` (groups of four channels
/// major, tokens padded to a multiple of 32 with zeros: the tiles' right operand); per task a
/// group of 32-column blocks of the output and a slab of at most 256 tokens, and per scale
/// block every column block of the group over every 32 tokens of the slab: `tdpbssd` into
/// exact i32 sums, turned into floats and added to the block's f32 accumulator; then each
/// 32 x 32 block written transposed into `out`.
///
/// # Safety
/// AMX int8 and AVX512-VNNI must be available; the sizes fit the tiles (`fits_tiles`); the
/// buffers sized as [`matmul_transposed`] checks.
#[cfg(target_arch = "x86_64")]
unsafe fn matmul_amx(x: &[f32], m: usize, w: TransposedView<'_>, out: &mut [f32]) {
    use crate::amx::{self, BLOCK, PAIRS};
    let (k, n) = (w.k, w.n);
    let groups = k / 4;
    let mp = m.next_multiple_of(BLOCK);
    // Token scales (padding tokens 0) and reciprocals.
    let mut xs = vec![0f32; mp];
    let mut inv = vec![0f32; m];
    xs[..m]
        .par_iter_mut()
        .zip(inv.par_iter_mut())
        .zip(x.par_chunks(k))
        .for_each(|((s, i), row)| {
            // SAFETY: AVX-512 F (implied by the caller's AVX512-VNNI).
            (*s, *i) = unsafe { super::row_scale(row) };
        });
    // Right operand: xq[g * mp + t] = channels 4g..4g+4 of token t as signed bytes.
    let mut xq = vec![0u32; groups * mp];
    xq.par_chunks_mut(PAIRS * mp)
        .enumerate()
        .for_each(|(chunk, rows)| {
            let g0 = chunk * PAIRS;
            let mut words = [0u32; PAIRS];
            for t in 0..m {
                // SAFETY: AVX-512 F/BW (caller); 64 values of row t from channel 4 g0 (k is a
                // multiple of 64), 16 words.
                unsafe {
                    super::native::quantize_words(
                        &x[t * k + 4 * g0..][..4 * PAIRS],
                        inv[t],
                        false,
                        &mut words,
                    )
                };
                for (i, &word) in words.iter().enumerate() {
                    rows[i * mp + t] = word;
                }
            }
        });
    let block = w.block.min(k);
    let scale_blocks = k.div_ceil(block);
    let col_blocks = n / BLOCK;
    let token_blocks = mp / BLOCK;
    let slab_blocks = SLAB / BLOCK;
    let slabs = token_blocks.div_ceil(slab_blocks);
    // Enough tasks for every thread when the output is narrow (the split does not change any
    // output element's arithmetic).
    let group = GROUP
        .min(col_blocks.div_ceil(2 * rayon::current_num_threads()))
        .max(1);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let (xq, xs) = (&xq, &xs);
    // Tasks in the order (column group, slab): consecutive tasks share the group's weight rows.
    (0..col_blocks.div_ceil(group) * slabs)
        .into_par_iter()
        .for_each_init(
            || {
                (
                    vec![[0f32; BLOCK * BLOCK]; GROUP * slab_blocks],
                    Box::new([0i32; BLOCK * BLOCK]),
                )
            },
            |(acc, sums), task| {
                let (cg, slab) = (task / slabs, task % slabs);
                let first = cg * group;
                let count = group.min(col_blocks - first);
                let tb0 = slab * slab_blocks;
                let tbs = slab_blocks.min(token_blocks - tb0);
                for a in acc.iter_mut() {
                    a.fill(0.0);
                }
                // SAFETY: AMX is available (caller); this task uses the tiles only through `tiles`.
                let mut tiles = unsafe { amx::Tiles::new() };
                for sb in 0..scale_blocks {
                    let r0 = sb * block;
                    let steps = block.min(k - r0) / (4 * PAIRS);
                    for q in 0..count {
                        let row = (first + q) * BLOCK;
                        // Left operand: 32 rows of the transposed weight from channel r0.
                        let a = w.qt[row * k + r0..].as_ptr() as *const u8;
                        let scale = &w.scale[sb * n + row..][..BLOCK];
                        for tb in 0..tbs {
                            let t0 = (tb0 + tb) * BLOCK;
                            tiles.zero();
                            // Right operand: groups from r0 / 4, tokens t0..t0 + 32.
                            let b = xq[(r0 / 4) * mp + t0..].as_ptr() as *const u8;
                            // SAFETY: 32 rows of k bytes from `a` hold `steps` x 64 bytes each
                            // (r0 + 64 steps <= k); `steps` x 16 group rows of mp words from `b`
                            // lie in `xq` (r0 / 4 + 16 steps <= k / 4), 32 tokens each
                            // (t0 + 32 <= mp); AMX-INT8 (caller).
                            unsafe { tiles.accumulate_i8i8(a, k, b, mp * 4, steps) };
                            tiles.store_i32(sums);
                            // SAFETY: AVX-512 F (caller).
                            unsafe {
                                rescale(
                                    sums,
                                    scale,
                                    &xs[t0..t0 + BLOCK],
                                    &mut acc[q * slab_blocks + tb],
                                )
                            };
                        }
                    }
                }
                // acc[i * 32 + j] = out[t0 + j][row + i]
                for q in 0..count {
                    let row = (first + q) * BLOCK;
                    for tb in 0..tbs {
                        let block = &acc[q * slab_blocks + tb];
                        let t0 = (tb0 + tb) * BLOCK;
                        for j in 0..BLOCK.min(m - t0) {
                            // SAFETY: row t0 + j < m, columns row..row + 32 <= n of `out`,
                            // written by this task only (its column blocks).
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out_ptr.get().add((t0 + j) * n + row),
                                    BLOCK,
                                )
                            };
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = block[i * BLOCK + j];
                            }
                        }
                    }
                }
            },
        );
}

/// `acc[i, j] += (sums[i, j] as f32 · token_scale[j]) · scale[i]` on a 32 x 32 block (row `i`
/// an output column, column `j` a token): the same operations in the same order as the
/// row-major paths' rescaling, so the floats agree bit for bit.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rescale(sums: &[i32; 1024], scale: &[f32], token_scale: &[f32], acc: &mut [f32; 1024]) {
    use std::arch::x86_64::*;
    debug_assert!(scale.len() >= 32 && token_scale.len() >= 32);
    // SAFETY: 32 values in `scale` and `token_scale`, 32 x 32 in `sums` and `acc`.
    unsafe {
        let tokens = [
            _mm512_loadu_ps(token_scale.as_ptr()),
            _mm512_loadu_ps(token_scale.as_ptr().add(16)),
        ];
        for (i, &s) in scale[..32].iter().enumerate() {
            let col = _mm512_set1_ps(s);
            for (h, &sa) in tokens.iter().enumerate() {
                let at = i * 32 + 16 * h;
                let exact =
                    _mm512_cvtepi32_ps(_mm512_loadu_si512(sums.as_ptr().add(at) as *const _));
                let term = _mm512_mul_ps(_mm512_mul_ps(exact, sa), col);
                let out = acc.as_mut_ptr().add(at);
                _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), term));
            }
        }
    }
}
