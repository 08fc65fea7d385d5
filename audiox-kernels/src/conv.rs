//! Convolutions over time as shifted GEMMs.
//!
//! `conv1d`: output column `t` of tap `j` reads input column `t * stride + j * dilation -
//! padding`, so `y[:, t] = bias + sum_j W_j x[:, t * stride + shift_j]` where `W_j` is the
//! `[C_out, C_in]` slice of the `[C_out, C_in, k]` kernel at tap `j` (a strided view). Each tap
//! is one GEMM on a block of output columns; the blocks are independent and run in parallel,
//! small enough that the block's output and input stay in cache across the taps.
//!
//! `conv_transpose1d` is the same with the roles swapped: input column `t` of tap `j` adds
//! `W_j^T x[:, t]` to output column `t * stride + j - padding`, a strided destination.

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::{flex_f32, reference, values};

/// Output columns per block: the block's output and the input it reads stay in cache.
const BLOCK: usize = 1024;

/// 1-D convolution of `x` `[B, C_in, T]` with `weight` `[C_out, C_in, k]` (zero padding on
/// both sides, stride and dilation), like `torch.nn.functional.conv1d` without groups.
pub fn conv1d(
    x: Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Tensor<3> {
    let fast = (
        flex_f32(&x),
        flex_f32(weight),
        bias.map(|b| flex_f32(b).ok_or(())).transpose(),
    );
    let (Some(xf), Some(wf), Ok(bf)) = fast else {
        return reference::conv1d(x, weight, bias, stride, padding, dilation);
    };
    let [b, cin, t] = x.dims();
    let [cout, wcin, k] = weight.dims();
    let span = dilation * (k - 1) + 1;
    if wcin != cin || stride == 0 || t + 2 * padding < span {
        return reference::conv1d(x, weight, bias, stride, padding, dilation);
    }
    let tout = (t + 2 * padding - span) / stride + 1;
    let (xs, ws) = (values(&xf), values(&wf));
    let bs = bf.as_ref().map(values);
    let mut out = vec![0.0f32; b * cout * tout];
    for item in 0..b {
        let x_item = &xs[item * cin * t..(item + 1) * cin * t];
        let out_item = SendPtr(out[item * cout * tout..].as_mut_ptr());
        (0..tout.div_ceil(BLOCK)).into_par_iter().for_each(|block| {
            let (c0, c1) = (block * BLOCK, ((block + 1) * BLOCK).min(tout));
            let out = out_item;
            // SAFETY: blocks write disjoint column ranges of this item's output.
            unsafe {
                init_columns(out.0, tout, cout, c0, c1, bs);
                for j in 0..k {
                    let shift = (j * dilation) as isize - padding as isize;
                    // Output columns whose input column t * stride + shift is inside [0, T).
                    let lo = ceil_div(-shift, stride as isize).max(c0 as isize);
                    let hi = ceil_div(t as isize - shift, stride as isize).min(c1 as isize);
                    if hi <= lo {
                        continue;
                    }
                    let (lo, n) = (lo as usize, (hi - lo) as usize);
                    gemm::gemm(
                        cout,
                        n,
                        cin,
                        out.0.add(lo),
                        1,
                        tout as isize,
                        true,
                        ws.as_ptr().add(j),
                        k as isize,
                        (cin * k) as isize,
                        x_item
                            .as_ptr()
                            .offset(lo as isize * stride as isize + shift),
                        stride as isize,
                        t as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
    }
    Tensor::from_data(TensorData::new(out, [b, cout, tout]), &x.device())
}

/// Transposed 1-D convolution of `x` `[B, C_in, T]` with `weight` `[C_in, C_out, k]` (stride,
/// padding removed from both ends, no output padding, no dilation), like
/// `torch.nn.functional.conv_transpose1d`.
pub fn conv_transpose1d(
    x: Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Tensor<3> {
    let fast = (
        flex_f32(&x),
        flex_f32(weight),
        bias.map(|b| flex_f32(b).ok_or(())).transpose(),
    );
    let (Some(xf), Some(wf), Ok(bf)) = fast else {
        return reference::conv_transpose1d(x, weight, bias, stride, padding);
    };
    let [b, cin, t] = x.dims();
    let [wcin, cout, k] = weight.dims();
    if wcin != cin || stride == 0 || t == 0 || (t - 1) * stride + k <= 2 * padding {
        return reference::conv_transpose1d(x, weight, bias, stride, padding);
    }
    let tout = (t - 1) * stride + k - 2 * padding;
    let (xs, ws) = (values(&xf), values(&wf));
    let bs = bf.as_ref().map(values);
    let mut out = vec![0.0f32; b * cout * tout];
    for item in 0..b {
        let x_item = &xs[item * cin * t..(item + 1) * cin * t];
        let out_item = SendPtr(out[item * cout * tout..].as_mut_ptr());
        (0..tout.div_ceil(BLOCK)).into_par_iter().for_each(|block| {
            let (u0, u1) = (block * BLOCK, ((block + 1) * BLOCK).min(tout));
            let out = out_item;
            // SAFETY: blocks write disjoint column ranges of this item's output.
            unsafe {
                init_columns(out.0, tout, cout, u0, u1, bs);
                for j in 0..k {
                    // Input column t lands on output column u = t * stride + offset.
                    let offset = j as isize - padding as isize;
                    let s = stride as isize;
                    let t_lo = ceil_div(u0 as isize - offset, s).max(0);
                    let t_hi = ceil_div(u1 as isize - offset, s).min(t as isize);
                    if t_hi <= t_lo {
                        continue;
                    }
                    let u_first = t_lo * s + offset;
                    gemm::gemm(
                        cout,
                        (t_hi - t_lo) as usize,
                        cin,
                        out.0.offset(u_first),
                        s,
                        tout as isize,
                        true,
                        ws.as_ptr().add(j),
                        (cout * k) as isize,
                        k as isize,
                        x_item.as_ptr().add(t_lo as usize),
                        1,
                        t as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
    }
    Tensor::from_data(TensorData::new(out, [b, cout, tout]), &x.device())
}

/// Sets columns `[c0, c1)` of a `[rows, width]` row-major block to the bias (or zero).
///
/// # Safety
/// `out` must point to `rows * width` writable f32 and no other thread may touch those columns.
unsafe fn init_columns(
    out: *mut f32,
    width: usize,
    rows: usize,
    c0: usize,
    c1: usize,
    bias: Option<&[f32]>,
) {
    for r in 0..rows {
        let value = bias.map_or(0.0, |b| b[r]);
        // SAFETY: the caller owns columns [c0, c1) of every row.
        let row = unsafe { std::slice::from_raw_parts_mut(out.add(r * width + c0), c1 - c0) };
        row.fill(value);
    }
}

fn ceil_div(a: isize, b: isize) -> isize {
    a.div_euclid(b) + isize::from(a.rem_euclid(b) != 0)
}

/// A raw pointer the parallel blocks share (each writes its own columns).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: every block writes a disjoint set of columns.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
