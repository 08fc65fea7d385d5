//! The quick GELU of CLIP, `x * sigmoid(1.702 x)`, in one vectorised pass.
//!
//! burn's composed ops (a scaled copy, `sigmoid`, a product) take three passes over the MLP's
//! hidden activations, the `sigmoid` through the C library's scalar `expf`; at 50 video frames
//! that was 17 % of the f32 CLIP stage's samples (`perf`, 2026-12-03, Intel Xeon with AMX).
//! Here each value is computed once with the branch-free `exp` of the attention softmax (within
//! 2 ulp), on the widest vectors the CPU has.

use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::{flex_f32, reference};

/// The slope of CLIP's quick GELU.
pub const QUICK_GELU_SLOPE: f32 = 1.702;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// `x * sigmoid(1.702 x)` elementwise: one pass on the CPU backend (in place when `x` is not
/// shared), [`reference::quick_gelu`] elsewhere (another backend, dtype or a strided view).
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let Some(flex) = flex_f32(&x) else {
        return reference::quick_gelu(x);
    };
    drop(flex);
    crate::map_values_in_place(x, apply)
}

fn apply(buf: &mut [f32]) {
    buf.par_chunks_mut(CHUNK).for_each(quick_gelu_slice);
}

/// [`quick_gelu`] over a slice in place, on the widest vectors the CPU has (the same
/// arithmetic at every width).
pub fn quick_gelu_slice(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { quick_gelu_avx512(x) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { quick_gelu_avx2(x) };
        return;
    }
    quick_gelu_generic(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn quick_gelu_avx512(x: &mut [f32]) {
    quick_gelu_generic(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quick_gelu_avx2(x: &mut [f32]) {
    quick_gelu_generic(x);
}

/// Below this (where `e^(-1.702 x)` would pass the exponential's clamp at `e^88`) the result,
/// under `4e-37` in size, is -0.0; which also gives -inf its limit 0.
const NEGLIGIBLE_BELOW: f32 = -51.5;

#[inline(always)]
fn quick_gelu_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        let y = *v / (1.0 + crate::attention::exp(-QUICK_GELU_SLOPE * *v));
        *v = if *v < NEGLIGIBLE_BELOW { -0.0 } else { y };
    }
}
