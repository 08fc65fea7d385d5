//! The f32 linear layer `x W + b`, with the same bits as burn's `linear` and a better split of
//! small products over the threads.
//!
//! burn's flex backend hands a product to the `gemm` crate whole, which shares the output's
//! micro-panels between the threads and meets them again for every reduction block: for a
//! product of few rows (T5's 128 tokens, the student step's 237-frame token convolutions) the
//! threads' micro-panels are mostly rows of one another's columns, so each of them may read
//! most of the weight. Here a product of at most [`SPLIT_MAX_ROWS`]
//! rows is split into contiguous column blocks, one per thread, each computed by its own
//! single-threaded `gemm` call: every thread reads only its share of the weight, once. Larger
//! products are the crate's own parallel call. The bias is added to each block while it is
//! still in cache (burn adds it in a second pass over the output).
//!
//! Every output element is the same sum, in the same order, as in burn's `linear` (a `gemm`
//! call whose reduction blocks depend only on `k`, then the bias added), so the result is bit
//! for bit burn's, for any thread count (`tests/linear.rs`).

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::send_ptr::{SendConstPtr, SendPtr};
use crate::{flex_f32, flex_f32_strided};

/// The most rows (tokens) a product may have for its columns to be split over the threads;
/// larger ones are shared out by the `gemm` crate itself.
pub const SPLIT_MAX_ROWS: usize = 256;

/// Columns per block boundary: blocks start on a 64-byte line of every output row, so no two
/// threads write one cache line.
const COLUMN_ALIGN: usize = 16;

/// The fewest columns a thread's block may have (below this the crate's own split is kept).
const MIN_BLOCK_COLUMNS: usize = 128;

/// burn-flex's threshold (`m * n * k`) below which it runs a product on one thread; kept so that
/// small products do not pay for waking the pool.
const PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// `x W + b` for `x` `[.., k]` and `W` `[k, n]` f32 tensors on the flex backend (`W` in any
/// layout with non-negative strides, `x` contiguous), `b` `[n]`; `None` where the fast path does
/// not apply (another backend or float type, autodiff, a strided input, a product whose rows
/// or columns are so few that the `gemm` crate takes a differently ordered path): use burn's
/// `linear` then. The result equals burn's `linear` bit for bit.
pub fn linear_f32<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    if D < 2 {
        return None;
    }
    let xf = flex_f32(x)?;
    let wf = flex_f32_strided(w)?;
    let [k, n] = w.dims();
    let dims = x.dims();
    if dims[D - 1] != k {
        return None;
    }
    let m: usize = dims[..D - 1].iter().product();
    // The `gemm` crate takes other summation orders for vectors (one row or column), for
    // reductions of at most 2, for products of at most 64 x 64 and for those of at most 256
    // elements; burn may hand it each batch of `x` on its own, so rows are counted per batch
    // (at least 2, and more than 128 columns, keep every batch out of all four). These shapes
    // stay with burn.
    if dims[D - 2] < 2 || n <= 128 || k <= 2 || m == 0 {
        return None;
    }
    let bias = match bias {
        Some(b) => {
            let bf = flex_f32_strided(b)?;
            if b.dims()[0] != n || bf.strides[0] != 1 {
                return None;
            }
            Some(bf)
        }
        None => None,
    };
    let bias_values: Option<&[f32]> = bias.as_ref().map(|b| {
        // SAFETY: `flex_f32_strided` checked that the `n` values from `base` lie in the buffer
        // and the stride is 1.
        unsafe { std::slice::from_raw_parts(b.base(&[]), n) }
    });
    let (w_rs, w_cs) = (wf.strides[0], wf.strides[1]);
    let w_ptr = wf.base(&[]);
    let x_values = crate::values(&xf);
    let mut out = vec![0.0f32; m * n];
    let threads = rayon::current_num_threads();
    let blocks = column_blocks(m, n, threads);
    if blocks.len() > 1 {
        let out_ptr = SendPtr(out.as_mut_ptr());
        let x_ptr = SendConstPtr(x_values.as_ptr());
        let w_at = SendConstPtr(w_ptr);
        blocks.par_iter().for_each(|&(c0, c1)| {
            let (out_ptr, x_ptr, w_at) = (&out_ptr, &x_ptr, &w_at);
            // SAFETY: `x` is `[m, k]` row-major, `W` is addressed through its checked strides
            // (column `c0` at `c0 * w_cs`), and each task writes only columns `c0..c1` of the
            // row-major `[m, n]` output, disjoint from every other task's; the buffers outlive
            // the parallel loop.
            unsafe {
                column_product(
                    m,
                    k,
                    n,
                    (c0, c1),
                    x_ptr.0,
                    w_at.0,
                    (w_rs, w_cs),
                    out_ptr.0,
                    gemm::Parallelism::None,
                );
                if let Some(b) = bias_values {
                    for row in 0..m {
                        let dst =
                            std::slice::from_raw_parts_mut(out_ptr.0.add(row * n + c0), c1 - c0);
                        dst.iter_mut().zip(&b[c0..c1]).for_each(|(o, b)| *o += b);
                    }
                }
            }
        });
    } else {
        let parallelism =
            if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_THRESHOLD {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
        // SAFETY: as above, one call over the whole `[m, n]` output.
        unsafe {
            column_product(
                m,
                k,
                n,
                (0, n),
                x_values.as_ptr(),
                w_ptr,
                (w_rs, w_cs),
                out.as_mut_ptr(),
                parallelism,
            );
        }
        if let Some(b) = bias_values {
            let add = |row: &mut [f32]| row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            if threads > 1 && m * n >= 1 << 16 {
                out.par_chunks_mut(n).for_each(add);
            } else {
                out.chunks_mut(n).for_each(add);
            }
        }
    }
    let mut shape = dims;
    shape[D - 1] = n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// Columns `c0..c1` of the row-major `[m, n]` product `out = x w`: `x` `[m, k]` row-major, `w`
/// `[k, n]` addressed through its `(row, column)` strides, one `gemm` call (alpha 0: `out` is
/// written, not read).
///
/// # Safety
/// `x` must hold `m * k` values, `w` the `[k, n]` matrix its strides describe, and `out`
/// `m * n` values, of which no other thread touches columns `c0..c1` during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn column_product(
    m: usize,
    k: usize,
    n: usize,
    (c0, c1): (usize, usize),
    x: *const f32,
    w: *const f32,
    (w_rs, w_cs): (isize, isize),
    out: *mut f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract; column `c0` of `w` lies at `c0 * w_cs`, of `out` at `c0`.
    unsafe {
        gemm::gemm(
            m,
            c1 - c0,
            k,
            out.add(c0),
            1,
            n as isize,
            false,
            x,
            1,
            k as isize,
            w.offset(c0 as isize * w_cs),
            w_cs,
            w_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The column blocks `[c0, c1)` of an `[m, n]` product split over `threads`: one block (no
/// split) unless the product has at most [`SPLIT_MAX_ROWS`] rows and every thread gets at least
/// [`MIN_BLOCK_COLUMNS`] columns; block edges on multiples of [`COLUMN_ALIGN`].
fn column_blocks(m: usize, n: usize, threads: usize) -> Vec<(usize, usize)> {
    let parts = threads.min(n / MIN_BLOCK_COLUMNS);
    if m > SPLIT_MAX_ROWS || parts < 2 {
        return vec![(0, n)];
    }
    let units = n.div_ceil(COLUMN_ALIGN);
    (0..parts)
        .map(|i| {
            let c0 = (units * i / parts * COLUMN_ALIGN).min(n);
            let c1 = (units * (i + 1) / parts * COLUMN_ALIGN).min(n);
            (c0, c1)
        })
        .filter(|(c0, c1)| c1 > c0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_blocks_cover_the_columns_once_on_aligned_edges() {
        for (m, n, threads) in [(128, 768, 2), (128, 3072, 3), (40, 2304, 16), (128, 300, 2)] {
            let blocks = column_blocks(m, n, threads);
            assert!(blocks.len() >= 2, "{m} {n} {threads}");
            assert_eq!(blocks[0].0, 0);
            assert_eq!(blocks.last().unwrap().1, n);
            for pair in blocks.windows(2) {
                assert_eq!(pair[0].1, pair[1].0);
                assert_eq!(pair[0].1 % COLUMN_ALIGN, 0);
            }
            assert!(blocks.len() <= threads);
        }
        assert_eq!(column_blocks(SPLIT_MAX_ROWS + 1, 4096, 2), vec![(0, 4096)]);
        assert_eq!(column_blocks(128, 200, 2), vec![(0, 200)]);
        assert_eq!(column_blocks(128, 4096, 1), vec![(0, 4096)]);
    }
}
