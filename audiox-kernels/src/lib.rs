//! Fast CPU kernels for the operations where burn's `flex` backend is slow, at the lowest clean
//! level: each function takes and returns burn tensors, reads a flex tensor's buffer in place
//! through burn's `extension` API, and falls back to burn's own operations (the [`reference`](mod@reference)
//! module, kept as the ground truth in the tests) for any other backend or layout.
//!
//! * [`snake`]: the SnakeBeta activation `x + sin(e^alpha x)^2 / (e^beta + 1e-9)` in one pass
//!   (burn composes it from five full-tensor passes and a slow `sin`), with an accurate
//!   vectorised `sin^2` (range reduction in f64, error below 1e-15).
//! * [`conv1d`] / [`conv_transpose1d`]: convolutions over time as shifted GEMMs on column
//!   blocks that stay in cache (no im2col buffer); the kernel taps are strided views of the
//!   weight, the shifts and strides are pointer offsets. Used by the VAE, whose time is almost
//!   all convolutions and Snake activations over up to 483k samples. Stride-1 kernels of 3 to
//!   7 taps between wide layers take minimal filtering (Winograd `F(2, k)`: `k + 1` GEMMs per
//!   two output columns instead of `2k`) where [`ConvAlgorithm::for_shape`] chooses it.
//! * [`bf16`]: a matrix product with the weight held in bf16 (half the memory), on Intel AMX
//!   tiles or AVX512-BF16 dot products where the CPU has them, an f32 register tile fed with
//!   the weight widened block by block on AVX2-only CPUs (see [`bf16::Bf16Kernel`]); the
//!   convolutions take a kernel held in bf16 through the native kernels or widened.
//! * [`int8`]: a matrix product with an int8 weight (per-output-channel scales, a quarter of
//!   the memory), on integer dot products with activations quantised per token where the CPU
//!   has AVX512-VNNI, on AMX int8 tiles where it has those too.
//! * [`attention`]: softmax attention without mask, one head per task (two GEMMs and a
//!   vectorised softmax in cache); the DiT's 64 heads of 24 are slow in burn's generic path.
//! * [`quick_gelu`] and [`silu_mul`] (the SwiGLU gate): activations in one vectorised pass
//!   with a branch-free `exp` (burn's go through the C library's scalar `expf`).
//! * [`linear_f32`]: the f32 linear layer with burn's bits, the columns of a product of few
//!   rows split over the threads (each reads only its share of the weight).
//!
//! Every kernel is deterministic: work is split over output blocks only, never over a
//! reduction, so the result does not depend on the thread count.

#![deny(missing_docs)]

#[cfg(target_arch = "x86_64")]
mod amx;
mod attention;
pub mod bf16;
mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_bf16;
mod gelu;
pub mod int8;
mod linear;
pub mod reference;
mod send_ptr;
mod silu;
mod snake;
mod winograd;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Tensor};

pub use attention::attention;
pub use conv::{
    CONV_ALGORITHM_ENV, ConvAlgorithm, WINOGRAD_MIN_CHANNELS, conv_transpose1d, conv1d,
    conv1d_using, snake_conv1d, snake_conv1d_residual, snake_conv1d_residual_using,
};
pub use gelu::{QUICK_GELU_SLOPE, quick_gelu, quick_gelu_slice};
pub use linear::{SPLIT_MAX_ROWS, linear_f32};
pub use silu::{silu_mul, silu_mul_slice};
pub use snake::snake;

/// The contiguous f32 buffer of a tensor on the flex backend, or `None` (another backend, dtype
/// or a non-contiguous layout: use the reference path).
pub(crate) fn flex_f32<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    let flex = t.clone().try_into_primitive::<Flex>().ok()?;
    (flex.dtype() == DType::F32 && flex.as_slice::<f32>().is_some()).then_some(flex)
}

/// A flex f32 tensor's buffer with the strides and offset of its view (non-negative strides).
pub(crate) struct StridedF32 {
    tensor: FlexTensor,
    /// Strides in elements, per dimension.
    pub strides: Vec<isize>,
    offset: usize,
}

impl StridedF32 {
    /// Pointer to the element at the given leading indices (the remaining ones zero).
    pub fn base(&self, leading: &[usize]) -> *const f32 {
        let at: isize = leading
            .iter()
            .zip(&self.strides)
            .map(|(&i, &s)| i as isize * s)
            .sum();
        let storage = self.tensor.storage::<f32>();
        // In bounds: the view's elements lie inside its storage.
        storage[self.offset + at as usize..].as_ptr()
    }
}

/// A flex f32 tensor of any layout with non-negative strides, or `None`.
pub(crate) fn flex_f32_strided<const D: usize>(t: &Tensor<D>) -> Option<StridedF32> {
    let tensor = t.clone().try_into_primitive::<Flex>().ok()?;
    if tensor.dtype() != DType::F32 {
        return None;
    }
    let layout = tensor.layout();
    let strides = layout.strides().to_vec();
    let offset = layout.start_offset();
    if strides.iter().any(|&s| s < 0) || t.dims().contains(&0) {
        return None;
    }
    // The furthest element must lie inside the storage.
    let last: usize = t
        .dims()
        .iter()
        .zip(&strides)
        .map(|(&d, &s)| (d - 1) * s as usize)
        .sum();
    (offset + last < tensor.storage::<f32>().len()).then_some(StridedF32 {
        tensor,
        strides,
        offset,
    })
}

/// `x` (a contiguous f32 tensor on the flex backend, checked by the caller with [`flex_f32`])
/// with `f` applied to all its values: in place when this is the only reference to the buffer,
/// otherwise on a copy (a shared input is left untouched).
pub(crate) fn map_values_in_place<const D: usize>(
    x: Tensor<D>,
    f: impl FnOnce(&mut [f32]),
) -> Tensor<D> {
    let device = x.device();
    let dims = x.dims();
    let mut prim = x
        .try_into_primitive::<Flex>()
        .expect("a flex tensor (checked by the caller)");
    if let Some(buf) = prim.try_storage_mut::<f32>()
        && buf.len() == dims.iter().product::<usize>()
    {
        f(buf);
        return Tensor::from_primitive::<Flex>(prim);
    }
    let mut out = values(&prim).to_vec();
    f(&mut out);
    Tensor::from_data(burn::tensor::TensorData::new(out, dims), &device)
}

/// The f32 values of a contiguous flex tensor.
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("checked by flex_f32")
}

/// `out[m, n] = x[m, k] · w[k, n]` in f32, all row-major, through the `gemm` crate on the
/// global rayon pool (the portable path of the reduced-precision products).
pub(crate) fn gemm_f32(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    debug_assert!(x.len() >= m * k && w.len() >= k * n && out.len() >= m * n);
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

/// `src` (`rows * cols` values, row-major) transposed: `out[c * rows + r] = src[r * cols + c]`,
/// on all cores, 32 rows of the output per task (each task reads 32 contiguous values of every
/// input row and fills its 32 output rows in step). The loader's and the int8 layout's
/// transposes.
///
/// # Panics
/// If `src.len() != rows * cols`.
pub fn transpose<T: Copy + Default + Send + Sync>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    use rayon::prelude::*;
    const B: usize = 32;
    assert_eq!(
        src.len(),
        rows * cols,
        "{} values are not [{rows}, {cols}]",
        src.len()
    );
    let mut out = vec![T::default(); src.len()];
    if rows == 0 || cols == 0 {
        return out;
    }
    out.par_chunks_mut(B * rows)
        .enumerate()
        .for_each(|(block, dst)| {
            let c0 = block * B;
            let width = dst.len() / rows;
            for r in 0..rows {
                for (c, &v) in src[r * cols + c0..][..width].iter().enumerate() {
                    dst[c * rows + r] = v;
                }
            }
        });
    out
}

/// Transposes a 16 x 16 block of 32-bit words held one row per register: afterwards
/// `r[j]` holds what was column `j`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16(r: &mut [std::arch::x86_64::__m512i; 16]) {
    use std::arch::x86_64::*;
    // Words of row pairs interleaved, then double words: within each 128-bit lane L,
    // u[4b + s] holds column 4L + s of rows 4b .. 4b + 4.
    let mut t = [_mm512_setzero_si512(); 16];
    for b in 0..8 {
        t[2 * b] = _mm512_unpacklo_epi32(r[2 * b], r[2 * b + 1]);
        t[2 * b + 1] = _mm512_unpackhi_epi32(r[2 * b], r[2 * b + 1]);
    }
    let mut u = [_mm512_setzero_si512(); 16];
    for b in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * b], t[4 * b + 1], t[4 * b + 2], t[4 * b + 3]);
        u[4 * b] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * b + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * b + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * b + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    // Gather lane L of u[s], u[4 + s], u[8 + s], u[12 + s] into column 4L + s.
    for s in 0..4 {
        let even_lo = _mm512_shuffle_i32x4::<0x88>(u[s], u[4 + s]);
        let odd_lo = _mm512_shuffle_i32x4::<0xDD>(u[s], u[4 + s]);
        let even_hi = _mm512_shuffle_i32x4::<0x88>(u[8 + s], u[12 + s]);
        let odd_hi = _mm512_shuffle_i32x4::<0xDD>(u[8 + s], u[12 + s]);
        r[s] = _mm512_shuffle_i32x4::<0x88>(even_lo, even_hi);
        r[8 + s] = _mm512_shuffle_i32x4::<0xDD>(even_lo, even_hi);
        r[4 + s] = _mm512_shuffle_i32x4::<0x88>(odd_lo, odd_hi);
        r[12 + s] = _mm512_shuffle_i32x4::<0xDD>(odd_lo, odd_hi);
    }
}
