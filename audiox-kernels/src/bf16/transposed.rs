//! bf16 weights held **transposed**: the logical `[k, n]` weight stored as `[n, k]` (one row
//! per output column, the layout PyTorch's `Linear` uses), a strided view burn describes
//! exactly (strides `[1, k]`), so every burn operation still reads the right values.
//!
//! Why: the AMX kernel of [`super::matmul`] repacks the row-major weight into pairs of rows for
//! every product, reading 32 columns of each of `k` rows far apart in memory; at the student's
//! 237 tokens that repacking took about as long as the tile products themselves (measured with
//! `perf`, 2026-12-02: 10 % of a bf16 DiT step's samples in the packing, 16 % in the tile
//! loop). With the weight transposed, each 16 x 32 tile of it is 16 rows of 64 contiguous bytes
//! that `tileloadd` reads where they lie: the weight is the tiles' *left* operand, the
//! activations (rounded to bf16 pairs and transposed once per product, a small copy) the right
//! one, and the product is computed as `out^T = w^T · x^T` in 32 x 32 blocks, the reduction
//! split into chunks that keep the activations' chunk in the core's cache.
//!
//! The AVX512-BF16 kernel packs its panels of pairs of rows for every product either way; from
//! the row-major weight that reads 64 bytes from each of `k` rows, a page or more apart, and
//! on an AMD Zen 4 the packing took 30 % of a bf16 DiT step's samples (`perf`, 2026-12-04)
//! beside 57 % in the tile loop. From the transposed weight a panel is 32 rows read front to
//! back and transposed 16 x 16 words at a time in registers: with the weight read from memory
//! the student's products ran 1.1-1.6x faster (`reduced_gemm`, same machine).
//!
//! Chosen at load ([`prefers_transposed`]) only where the process's kernel is AMX or
//! AVX512-BF16 and both sizes are multiples of 32; the widened kernel reads a transposed
//! weight through a row-major copy ([`matmul_transposed_with`]), so it is correct on it but
//! not faster.

use burn::backend::Flex;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use half::bf16;
use rayon::prelude::*;

use super::{Bf16Kernel, SendPtr};

/// Sizes `k` and `n` must be multiples of this for the transposed layout (the tiles' 32
/// columns of `k` per step and 32 rows of `n` per block; nothing is padded).
pub const TRANSPOSED_MULTIPLE: usize = 32;

/// Bytes of the activations' chunk of the reduction (`chunk / 2` pair words per token, for
/// every token): it stays in the core's cache while every column block of a task runs over it.
#[cfg(target_arch = "x86_64")]
const CHUNK_BYTES: usize = 512 << 10;

/// Input channels per chunk of the reduction for `mp` (padded) tokens: a multiple of 32
/// between 64 and 2,048 whose activations fill about [`CHUNK_BYTES`].
#[cfg(target_arch = "x86_64")]
fn chunk_for(mp: usize) -> usize {
    let per_channel = 2 * mp; // bf16 per token
    (CHUNK_BYTES / per_channel.max(1)).clamp(64, 2048) / 32 * 32
}

/// Up to this many tokens the AMX kernel multiplies the transposed weight where it lies; above,
/// the weight is packed into pairs of rows (reading its rows front to back) for the row-major
/// kernel, whose packing is then spread over enough tokens to cost little (measured with
/// `reduced_gemm`: at 620 and 1,024 tokens the row-major tiles were as fast or up to 1.25x
/// faster than the direct ones, at 237 tokens 1.3-1.6x slower).
#[cfg(target_arch = "x86_64")]
const DIRECT_TOKENS: usize = 512;

/// Tokens per task at most (8 blocks of 32): more tokens are split into slabs, so that the
/// reduction's chunk stays long (about 1,024 channels) whatever the number of tokens.
#[cfg(target_arch = "x86_64")]
const SLAB: usize = 256;

/// Column blocks of 32 per task.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 4;

/// Whether a bf16 matmul weight `[k, n]` is best held transposed on this process's kernel:
/// the kernel is AMX or AVX512-BF16 and `k`, `n` are multiples of [`TRANSPOSED_MULTIPLE`].
pub fn prefers_transposed(k: usize, n: usize) -> bool {
    matches!(
        Bf16Kernel::current(),
        Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16
    ) && k > 0
        && n > 0
        && k.is_multiple_of(TRANSPOSED_MULTIPLE)
        && n.is_multiple_of(TRANSPOSED_MULTIPLE)
}

/// `w` (a bf16 matmul weight `[.., n]` read as `[k, n]`, on the flex backend) held
/// transposed when [`prefers_transposed`] says so: the same logical tensor, stored `[n, k]`.
/// Returned unchanged otherwise (another backend or dtype, sizes that do not fit, another
/// kernel). One transient copy of the weight while it is rewritten.
pub fn hold_transposed<const W: usize>(w: Tensor<W>) -> Tensor<W> {
    let dims = w.dims();
    if W < 2 || w.dtype() != DType::BF16 {
        return w;
    }
    let n = dims[W - 1];
    let k: usize = dims[..W - 1].iter().product();
    if !prefers_transposed(k, n) || transposed_view(&w).is_some() {
        return w;
    }
    let Ok(flex) = w.clone().try_into_primitive::<Flex>() else {
        return w;
    };
    let Some(src) = flex.as_slice::<bf16>() else {
        return w;
    };
    let mut wt = vec![bf16::ZERO; k * n];
    transpose(src, k, n, &mut wt);
    // Logical axes [d0, .., d_{W-2}, n]: the leading ones contiguous among themselves, the
    // last one k apart.
    let mut strides = vec![0isize; W];
    strides[W - 1] = k as isize;
    let mut inner = 1usize;
    for axis in (0..W - 1).rev() {
        strides[axis] = inner as isize;
        inner *= dims[axis];
    }
    let layout = Layout::new(dims.to_vec().into(), strides, 0);
    let (bytes, _, _) = TensorData::new(wt, [k * n]).into_parts();
    Tensor::from_primitive::<Flex>(FlexTensor::new(bytes, layout, DType::BF16))
}

/// A matmul weight given as f32 `values` of shape `dims` (`[.., n]`, row-major, read as
/// `[k, n]`), held in bf16 on `device`: transposed (stored `[n, k]`, converted and transposed in
/// one pass, no row-major bf16 copy in between) when [`prefers_transposed`] says so and
/// `device` is the CPU (flex) backend, else `None` (the caller holds it row-major).
///
/// # Panics
/// If `values.len()` is not the product of `dims`.
pub fn hold_transposed_from_f32<const W: usize>(
    values: &[f32],
    dims: [usize; W],
    device: &Device,
) -> Option<Tensor<W>> {
    if W < 2 {
        return None;
    }
    let n = dims[W - 1];
    let k: usize = dims[..W - 1].iter().product();
    assert_eq!(values.len(), k * n, "{} values for {dims:?}", values.len());
    if !prefers_transposed(k, n) {
        return None;
    }
    let mut wt = vec![bf16::ZERO; k * n];
    transpose_map(values, k, n, &mut wt, bf16::from_f32);
    // Stored [n, d0, .., d_{W-2}], then the first axis moved last: the strided view
    // `transposed_view` recognises.
    let mut stored = [0usize; W];
    stored[0] = n;
    stored[1..].copy_from_slice(&dims[..W - 1]);
    let mut axes = [0usize; W];
    for (i, a) in axes.iter_mut().enumerate() {
        *a = (i + 1) % W;
    }
    let held = Tensor::<W>::from_data(
        TensorData::new(wt, stored),
        TensorCreationOptions::new(device.clone()).with_dtype(DType::BF16),
    );
    let held = held.permute(axes);
    // Only the CPU backend's kernels read the layout: on another device the weight is held
    // row-major (the caller's path), as every device's products expect.
    transposed_view(&held).is_some().then_some(held)
}

/// Whether `w` is a bf16 weight held transposed ([`hold_transposed`],
/// [`hold_transposed_from_f32`]) on the CPU backend.
pub fn is_held_transposed<const W: usize>(w: &Tensor<W>) -> bool {
    transposed_view(w).is_some()
}

/// The `[n, k]` buffer of a bf16 weight held transposed ([`hold_transposed`]), or `None` for
/// any other layout, dtype or backend.
pub(crate) fn transposed_view<const W: usize>(w: &Tensor<W>) -> Option<FlexTensor> {
    if W < 2 || w.dtype() != DType::BF16 {
        return None;
    }
    let flex = w.clone().try_into_primitive::<Flex>().ok()?;
    let dims = w.dims();
    let k: usize = dims[..W - 1].iter().product();
    let layout = flex.layout();
    let strides = layout.strides();
    if layout.start_offset() != 0 || strides[W - 1] != k as isize || k == 0 {
        return None;
    }
    let mut inner = 1usize;
    for axis in (0..W - 1).rev() {
        if strides[axis] != inner as isize {
            return None;
        }
        inner *= dims[axis];
    }
    (flex.storage::<bf16>().len() >= k * dims[W - 1]).then_some(flex)
}

/// `dst[c * k + r] = src[r * n + c]`, 32 rows of `dst` per task.
fn transpose(src: &[bf16], k: usize, n: usize, dst: &mut [bf16]) {
    transpose_map(src, k, n, dst, |v| v);
}

/// `dst[c * k + r] = f(src[r * n + c])`, 32 rows of `dst` per task (each task reads 32
/// contiguous values of every row of `src` and fills 32 rows of `dst` in step).
fn transpose_map<S: Copy + Sync, D: Copy + Send>(
    src: &[S],
    k: usize,
    n: usize,
    dst: &mut [D],
    f: impl Fn(S) -> D + Sync,
) {
    const B: usize = 32;
    dst.par_chunks_mut(B * k)
        .enumerate()
        .for_each(|(block, rows)| {
            let c0 = block * B;
            let width = rows.len() / k;
            for r in 0..k {
                let line = &src[r * n + c0..][..width];
                for (c, &v) in line.iter().enumerate() {
                    rows[c * k + r] = f(v);
                }
            }
        });
}

/// `out[m, n] = x[m, k] · w[k, n]` with the weight given transposed, `wt` `[n, k]` row-major,
/// on this process's kernel ([`Bf16Kernel::current`]).
///
/// # Panics
/// If `x.len() != m * k`, `wt.len() != n * k` or `out.len() != m * n`.
pub fn matmul_transposed(x: &[f32], m: usize, wt: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    matmul_transposed_with(Bf16Kernel::current(), x, m, wt, k, n, out);
}

/// [`matmul_transposed`] on a given kernel. When `k` and `n` are multiples of
/// [`TRANSPOSED_MULTIPLE`], AMX multiplies the transposed weight where it lies and
/// AVX512-BF16 packs its panels from it; otherwise the weight is copied back to row-major
/// `[k, n]` for [`super::matmul_with`]. Either way the result is exactly that kernel's on the
/// row-major weight.
///
/// # Panics
/// As [`matmul_transposed`].
pub fn matmul_transposed_with(
    kernel: Bf16Kernel,
    x: &[f32],
    m: usize,
    wt: &[bf16],
    k: usize,
    n: usize,
    out: &mut [f32],
) {
    // The transposed weight has the row-major one's k * n values.
    super::check(x, m, wt, k, n, out);
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Amx
        && kernel.is_supported()
        && k.is_multiple_of(TRANSPOSED_MULTIPLE)
        && n.is_multiple_of(TRANSPOSED_MULTIPLE)
        && k > 0
    {
        // SAFETY: AMX bf16 and AVX512-BF16 are available (checked), sizes are multiples of 32.
        return unsafe {
            if m <= DIRECT_TOKENS {
                matmul_amx(x, m, wt, k, n, out)
            } else {
                super::matmul_amx(x, m, wt, k, n, true, out)
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Avx512Bf16
        && kernel.is_supported()
        && k.is_multiple_of(TRANSPOSED_MULTIPLE)
        && n.is_multiple_of(TRANSPOSED_MULTIPLE)
        && k > 0
    {
        // SAFETY: AVX512-F/BW/BF16 are available (checked), sizes are multiples of 32.
        return unsafe { super::matmul_native(x, m, wt, k, n, true, out) };
    }
    let mut w = vec![bf16::ZERO; k * n];
    transpose(wt, n, k, &mut w);
    super::matmul_with(kernel, x, m, &w, k, n, out);
}

/// The AMX product on a transposed weight: the activations rounded to bf16 pairs and laid out
/// `[k / 2, mp]` (pair-major, tokens padded to a multiple of 32 with zeros: the tiles' right
/// operand); per task a group of 32-column blocks of the output and a slab of at most 256
/// tokens, and per chunk of the reduction every block of the group over every 32 tokens of
/// the slab, accumulating in memory between chunks; then each 32 x 32 block written
/// transposed into `out`.
///
/// # Safety
/// AMX bf16 and AVX512-BF16 must be available; `k` and `n` multiples of 32, `k > 0`; the
/// buffers sized as [`matmul_transposed`] checks.
#[cfg(target_arch = "x86_64")]
unsafe fn matmul_amx(x: &[f32], m: usize, wt: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    use crate::amx::{self, BLOCK, PAIRS};
    let pairs = k / 2;
    let mp = m.next_multiple_of(BLOCK);
    // Right operand: xb[p * mp + t] = (x[t][2p], x[t][2p + 1]) rounded to bf16.
    let mut xb = vec![0u32; pairs * mp];
    xb.par_chunks_mut(PAIRS * mp)
        .enumerate()
        .for_each(|(chunk, rows)| {
            let p0 = chunk * PAIRS;
            let mut words = [0u32; PAIRS];
            for t in 0..m {
                // SAFETY: AVX512-BF16 (caller); 32 values of row t from column 2 p0 (k is a
                // multiple of 32).
                unsafe { super::native::round_row(&x[t * k + 2 * p0..][..2 * PAIRS], &mut words) };
                for (i, &w) in words.iter().enumerate() {
                    rows[i * mp + t] = w;
                }
            }
        });
    let blocks = n / BLOCK;
    let token_blocks = mp / BLOCK;
    let slab_blocks = SLAB / BLOCK;
    let slabs = token_blocks.div_ceil(slab_blocks);
    let chunk = chunk_for(mp.min(SLAB));
    let out_ptr = SendPtr(out.as_mut_ptr());
    let xb = &xb;
    // Tasks in the order (column group, slab of tokens): consecutive tasks share the group's
    // weight rows, which are then read from the cache.
    (0..blocks.div_ceil(GROUP) * slabs)
        .into_par_iter()
        .for_each_init(
            || vec![[0f32; BLOCK * BLOCK]; GROUP * slab_blocks],
            |acc, task| {
                let (group, slab) = (task / slabs, task % slabs);
                let first = group * GROUP;
                let count = GROUP.min(blocks - first);
                let tb0 = slab * slab_blocks;
                let tbs = slab_blocks.min(token_blocks - tb0);
                // SAFETY: AMX is available (caller); this task uses the tiles only through `tiles`.
                let mut tiles = unsafe { amx::Tiles::new() };
                for c0 in (0..k).step_by(chunk) {
                    let len = chunk.min(k - c0);
                    let steps = len / (2 * PAIRS);
                    for q in 0..count {
                        let row = (first + q) * BLOCK;
                        // Left operand: 32 rows of the transposed weight from column c0.
                        let a = wt[row * k + c0..].as_ptr() as *const u8;
                        for tb in 0..tbs {
                            let block = &mut acc[q * slab_blocks + tb];
                            if c0 == 0 {
                                tiles.zero();
                            } else {
                                tiles.load(block);
                            }
                            // Right operand: pairs from c0 / 2, tokens from 32 (tb0 + tb).
                            let b = xb[(c0 / 2) * mp + (tb0 + tb) * BLOCK..].as_ptr() as *const u8;
                            // SAFETY: 32 rows of 2k bytes from `a` hold `steps` x 64 bytes each
                            // (c0 + 32 steps <= k); `steps` x 16 pair rows of mp words from `b` lie
                            // in `xb` (c0 / 2 + 16 steps <= k / 2), 32 tokens each
                            // (tb0 + tb < mp / 32).
                            unsafe { tiles.accumulate(a, 2 * k, b, mp * 4, steps) };
                            tiles.store(block);
                        }
                    }
                }
                // block[i * 32 + j] = out[t0 + j][row + i]
                for q in 0..count {
                    let row = (first + q) * BLOCK;
                    for tb in 0..tbs {
                        let block = &acc[q * slab_blocks + tb];
                        let t0 = (tb0 + tb) * BLOCK;
                        for j in 0..BLOCK.min(m - t0) {
                            // SAFETY: row t0 + j < m, columns row..row + 32 < n of `out`, written by
                            // this task only (its column blocks).
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
