//! Convolutions over time as shifted GEMMs.
//!
//! `conv1d`: output column `t` of tap `j` reads input column `t * stride + j * dilation -
//! padding`, so `y[:, t] = bias + sum_j W_j x[:, t * stride + shift_j]` where `W_j` is the
//! `[C_out, C_in]` slice of the `[C_out, C_in, k]` kernel at tap `j` (a strided view). Each tap
//! is one GEMM on a block of output columns; the blocks are independent and run in parallel,
//! small enough that the block's output and input stay in cache across the taps.
//!
//! Stride-1 convolutions of 3 to 7 taps between layers of at least [`WINOGRAD_MIN_CHANNELS`]
//! channels can instead take minimal filtering (`winograd.rs`, [`ConvAlgorithm`]): on CPUs with
//! AVX2 and no AVX-512 by default, elsewhere when asked.
//!
//! `conv_transpose1d` is the same with the roles swapped: input column `t` of tap `j` adds
//! `W_j^T x[:, t]` to output column `t * stride + j - padding`, a strided destination.
//!
//! A kernel held in bf16 (f32 activations) runs on the process's native bf16 kernel where there
//! is one (`conv_bf16.rs`, AMX tiles or AVX512-BF16 dot products as
//! [`crate::bf16::Bf16Kernel::current`] chooses: stride-1 convolutions and transposed ones; the
//! activations are rounded to bf16, sums in f32); elsewhere, and for strided `conv1d`, the
//! kernel is widened to f32 for the call and takes the f32 path.

use burn::backend::Flex;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::send_ptr::SendPtr;
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
    conv1d_with(x, weight, bias, stride, padding, dilation, None, None, None)
}

/// [`conv1d`] with the algorithm chosen by the caller instead of [`ConvAlgorithm::for_shape`]
/// (to compare them in one process): [`ConvAlgorithm::Winograd`] runs wherever it can (stride
/// 1, dilation at least 1, 3 to 7 taps, f32, any channel count), the shifted GEMMs elsewhere.
pub fn conv1d_using(
    algorithm: ConvAlgorithm,
    x: Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Tensor<3> {
    conv1d_with(
        x,
        weight,
        bias,
        stride,
        padding,
        dilation,
        None,
        None,
        Some(algorithm),
    )
}

/// `conv1d(snake(x, alpha, beta), ...)` without materialising the activation: each block of
/// output columns applies SnakeBeta to the input columns it reads (its halo included) in a
/// per-thread buffer. Saves a full-size tensor and a memory pass per call; the result is the
/// same as the two calls (same arithmetic per element).
#[allow(clippy::too_many_arguments)]
pub fn snake_conv1d(
    x: Tensor<3>,
    alpha: &Tensor<1>,
    beta: &Tensor<1>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Tensor<3> {
    snake_conv1d_residual(
        None, x, alpha, beta, weight, bias, stride, padding, dilation,
    )
}

/// `residual + conv1d(snake(x, alpha, beta), ...)` (or without `residual` when `None`), the
/// convolution accumulating straight into `residual`'s buffer when nothing else holds it: the
/// Oobleck residual unit's last convolution and skip connection in one pass, with one
/// full-size tensor fewer alive.
#[allow(clippy::too_many_arguments)]
pub fn snake_conv1d_residual(
    residual: Option<Tensor<3>>,
    x: Tensor<3>,
    alpha: &Tensor<1>,
    beta: &Tensor<1>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Tensor<3> {
    snake_conv1d_residual_with(
        residual, x, alpha, beta, weight, bias, stride, padding, dilation, None,
    )
}

/// [`snake_conv1d_residual`] with the algorithm chosen by the caller (as [`conv1d_using`]).
#[allow(clippy::too_many_arguments)]
pub fn snake_conv1d_residual_using(
    algorithm: ConvAlgorithm,
    residual: Option<Tensor<3>>,
    x: Tensor<3>,
    alpha: &Tensor<1>,
    beta: &Tensor<1>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Tensor<3> {
    snake_conv1d_residual_with(
        residual,
        x,
        alpha,
        beta,
        weight,
        bias,
        stride,
        padding,
        dilation,
        Some(algorithm),
    )
}

#[allow(clippy::too_many_arguments)]
fn snake_conv1d_residual_with(
    residual: Option<Tensor<3>>,
    x: Tensor<3>,
    alpha: &Tensor<1>,
    beta: &Tensor<1>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
    algorithm: Option<ConvAlgorithm>,
) -> Tensor<3> {
    let [_, c, _] = x.dims();
    let factors = match (flex_f32(alpha), flex_f32(beta)) {
        (Some(a), Some(b)) if values(&a).len() == c && values(&b).len() == c => {
            Some(crate::snake::factors(values(&a), values(&b)))
        }
        _ => None,
    };
    let Some((freq, inv_mag)) = factors else {
        // Another backend or mismatched parameters: the reference activation, then the conv.
        let x = reference::snake(x, alpha, beta);
        return conv1d_with(
            x, weight, bias, stride, padding, dilation, None, residual, algorithm,
        );
    };
    let act = SnakeInput {
        alpha,
        beta,
        freq,
        inv_mag,
    };
    conv1d_with(
        x,
        weight,
        bias,
        stride,
        padding,
        dilation,
        Some(act),
        residual,
        algorithm,
    )
}

/// How an f32 convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// One GEMM per tap on blocks of output columns (every shape).
    Shifted,
    /// Minimal filtering `F(2, k)` (`k + 1` GEMMs per two output columns instead of `2k`):
    /// stride-1 convolutions of 3 to 7 taps with at least [`WINOGRAD_MIN_CHANNELS`] input and
    /// output channels. Its rounding error is about five times the shifted GEMMs' (7 taps,
    /// 256 to 1,024 channels: 1.4-2.1e-6 of the output's norm against an f64 reference, the
    /// direct f32 convolution 3.8-4.1e-7; `docs/performance.md`).
    Winograd,
}

/// Environment variable that picks the convolution algorithm for the process, read once:
/// `shifted` (always the shifted GEMMs) or `winograd` (minimal filtering wherever it applies,
/// on any CPU). Unset or another value: [`ConvAlgorithm::Winograd`] where it applies on CPUs
/// with AVX2 and FMA but no AVX-512 (where it was measured faster), the shifted GEMMs elsewhere.
pub const CONV_ALGORITHM_ENV: &str = "AUDIOX_CONV_ALGORITHM";

/// The fewest input and output channels for which [`ConvAlgorithm::Winograd`] is taken: per
/// output column it saves `3 C_out` multiply-adds of each input channel and adds a fixed cost
/// (the transforms, the staging of its operands), which on an AVX2 Zen 3 broke even at 128
/// channels and won at 256 and above (`docs/performance.md`).
pub const WINOGRAD_MIN_CHANNELS: usize = 256;

impl ConvAlgorithm {
    /// The algorithm [`conv1d`] (and the fused variants) use for an f32 convolution of these
    /// sizes in this process: [`ConvAlgorithm::Winograd`] for stride-1 kernels of 3 to 7 taps
    /// with at least [`WINOGRAD_MIN_CHANNELS`] input and output channels when this process
    /// uses it ([`CONV_ALGORITHM_ENV`]), else [`ConvAlgorithm::Shifted`].
    pub fn for_shape(cin: usize, cout: usize, k: usize, stride: usize) -> ConvAlgorithm {
        static WINOGRAD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let enabled = *WINOGRAD.get_or_init(|| {
            match std::env::var(CONV_ALGORITHM_ENV).as_deref().map(str::trim) {
                Ok("shifted") => false,
                Ok("winograd") => true,
                _ => avx2_without_avx512(),
            }
        });
        if enabled
            && crate::winograd::applies(k, stride, 1)
            && cin.min(cout) >= WINOGRAD_MIN_CHANNELS
        {
            ConvAlgorithm::Winograd
        } else {
            ConvAlgorithm::Shifted
        }
    }
}

/// Whether the CPU has AVX2 and FMA but not AVX-512 (the class the minimal-filtering path was
/// measured on; elsewhere it is taken only when asked).
fn avx2_without_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && !std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// SnakeBeta applied to a convolution's input: the parameters (for the reference path) and
/// their per-channel factors.
struct SnakeInput<'a> {
    alpha: &'a Tensor<1>,
    beta: &'a Tensor<1>,
    freq: Vec<f32>,
    inv_mag: Vec<f32>,
}

/// [`conv1d`], with SnakeBeta applied to the input on the fly and the result accumulated into
/// a residual, when given.
#[allow(clippy::too_many_arguments)]
fn conv1d_with(
    x: Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
    snake: Option<SnakeInput<'_>>,
    mut residual: Option<Tensor<3>>,
    algorithm: Option<ConvAlgorithm>,
) -> Tensor<3> {
    if weight.dtype() == DType::BF16 && x.dtype() == DType::F32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(out) = conv1d_bf16_native(
            &x,
            weight,
            bias,
            (stride, padding, dilation),
            snake.as_ref(),
            &mut residual,
        ) {
            return out;
        }
        let wide = widen(weight);
        return conv1d_with(
            x, &wide, bias, stride, padding, dilation, snake, residual, algorithm,
        );
    }
    let fallback = |x: Tensor<3>, residual: Option<Tensor<3>>| {
        let x = match &snake {
            Some(act) => reference::snake(x, act.alpha, act.beta),
            None => x,
        };
        let y = reference::conv1d(x, weight, bias, stride, padding, dilation);
        match residual {
            Some(r) => r + y,
            None => y,
        }
    };
    let fast = (
        flex_f32(&x),
        flex_f32(weight),
        bias.map(|b| flex_f32(b).ok_or(())).transpose(),
    );
    let (Some(xf), Some(wf), Ok(bf)) = fast else {
        return fallback(x, residual);
    };
    let [b, cin, t] = x.dims();
    let [cout, wcin, k] = weight.dims();
    let span = dilation * (k - 1) + 1;
    let tout = (t + 2 * padding).saturating_sub(span) / stride.max(1) + 1;
    let residual_fits = residual
        .as_ref()
        .is_none_or(|r| r.dims() == [b, cout, tout] && flex_f32(r).is_some());
    if wcin == cin && stride > 0 && t + 2 * padding < span {
        // No output column fits (torch refuses this; burn's own size formula underflows):
        // the result has zero columns.
        drop((xf, wf, bf));
        let empty = Tensor::<3>::zeros([b, cout, 0], &x.device());
        return match residual {
            Some(r) => r + empty,
            None => empty,
        };
    }
    if wcin != cin || stride == 0 || !residual_fits {
        drop((xf, wf, bf));
        return fallback(x, residual);
    }
    let (xs, ws) = (values(&xf), values(&wf));
    let bs = bf.as_ref().map(values);
    // The destination: a new buffer, or the residual's (in place when unique, else a copy)
    // that the convolution accumulates into.
    let accumulate = residual.is_some();
    let mut dest = Destination::new(residual, b * cout * tout);
    let out = dest.as_mut_slice();
    let winograd = match algorithm {
        Some(asked) => {
            asked == ConvAlgorithm::Winograd && crate::winograd::applies(k, stride, dilation)
        }
        None => {
            ConvAlgorithm::for_shape(cin, cout, k, stride) == ConvAlgorithm::Winograd
                && crate::winograd::applies(k, stride, dilation)
        }
    };
    if winograd {
        let factors = snake
            .as_ref()
            .map(|act| (act.freq.as_slice(), act.inv_mag.as_slice()));
        for item in 0..b {
            // SAFETY: `out` holds `b` items of `[cout, tout]`; the sizes were checked above
            // (`tout` is the stride-1 output length) and `applies` checked `k`, `stride` and `dilation`.
            unsafe {
                crate::winograd::conv1d_item(
                    &xs[item * cin * t..(item + 1) * cin * t],
                    [cin, t],
                    ws,
                    [cout, k],
                    bs,
                    (padding, dilation),
                    factors,
                    (out[item * cout * tout..].as_mut_ptr(), tout),
                    accumulate,
                );
            }
        }
        drop((xf, wf, bf));
        return dest.into_tensor([b, cout, tout], &x.device());
    }
    for item in 0..b {
        let x_item = &xs[item * cin * t..(item + 1) * cin * t];
        let out_item = SendPtr(out[item * cout * tout..].as_mut_ptr());
        let blocks = (0..tout.div_ceil(BLOCK)).into_par_iter();
        blocks.for_each_init(Vec::new, |scratch: &mut Vec<f32>, block| {
            let (c0, c1) = (block * BLOCK, ((block + 1) * BLOCK).min(tout));
            let out = out_item;
            // The input columns the block reads, [in_lo, in_hi) within [0, T), and where
            // they are read from: the input itself or their activation in `scratch`.
            let in_lo = (c0 * stride).saturating_sub(padding).min(t);
            let in_hi = ((c1 - 1) * stride + span).saturating_sub(padding).min(t);
            let (source, source_width, source_start) = match &snake {
                Some(act) if in_hi > in_lo => {
                    let width = in_hi - in_lo;
                    scratch.clear();
                    scratch.resize(cin * width, 0.0);
                    for (ch, row) in scratch.chunks_exact_mut(width).enumerate() {
                        row.copy_from_slice(&x_item[ch * t + in_lo..ch * t + in_hi]);
                        crate::snake::snake_row(row, act.freq[ch], act.inv_mag[ch]);
                    }
                    (scratch.as_ptr(), width, in_lo)
                }
                _ => (x_item.as_ptr(), t, 0),
            };
            // SAFETY: blocks write disjoint column ranges of this item's output; every read
            // lies inside the block's input range, which `source` holds.
            unsafe {
                if accumulate {
                    add_bias_columns(out.0, tout, cout, c0, c1, bs);
                } else {
                    init_columns(out.0, tout, cout, c0, c1, bs);
                }
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
                        source
                            .offset(lo as isize * stride as isize + shift - source_start as isize),
                        stride as isize,
                        source_width as isize,
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
    drop((xf, wf, bf));
    dest.into_tensor([b, cout, tout], &x.device())
}

/// A bf16 kernel as f32 (on all cores where the flex backend holds it; burn's cast elsewhere).
fn widen(weight: &Tensor<3>) -> Tensor<3> {
    if let Ok(flex) = weight.clone().try_into_primitive::<Flex>()
        && let Some(src) = flex.as_slice::<bf16>()
    {
        let mut out = vec![0.0f32; src.len()];
        out.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(o, s)| s.convert_to_f32_slice(o));
        return Tensor::from_data(TensorData::new(out, weight.dims()), &weight.device());
    }
    weight.clone().cast(FloatDType::F32)
}

/// The contiguous bf16 buffer of a kernel on the flex backend and the native bf16 kernel this
/// process uses, or `None` (the widened path).
#[cfg(target_arch = "x86_64")]
fn native_bf16(
    weight: &Tensor<3>,
) -> Option<(burn::backend::flex::FlexTensor, crate::bf16::Bf16Kernel)> {
    let kernel = crate::bf16::Bf16Kernel::current();
    if !kernel.rounds_activations() {
        return None;
    }
    let flex = weight.clone().try_into_primitive::<Flex>().ok()?;
    (flex.dtype() == DType::BF16 && flex.as_slice::<bf16>().is_some()).then_some((flex, kernel))
}

/// [`conv1d_with`] for a bf16 kernel on the native bf16 kernels, or `None` (another CPU or
/// backend, a strided convolution, shapes the f32 path handles): `residual` is taken only when
/// the result is returned.
#[cfg(target_arch = "x86_64")]
fn conv1d_bf16_native(
    x: &Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    (stride, padding, dilation): (usize, usize, usize),
    snake: Option<&SnakeInput<'_>>,
    residual: &mut Option<Tensor<3>>,
) -> Option<Tensor<3>> {
    let [b, cin, t] = x.dims();
    let [cout, wcin, k] = weight.dims();
    let span = dilation * (k - 1) + 1;
    if stride != 1 || wcin != cin || k == 0 || t + 2 * padding < span {
        return None;
    }
    let tout = t + 2 * padding + 1 - span;
    let fits = residual
        .as_ref()
        .is_none_or(|r| r.dims() == [b, cout, tout] && flex_f32(r).is_some());
    let xf = flex_f32(x)?;
    let (wf, kernel) = native_bf16(weight)?;
    let bf = bias.map(|b| flex_f32(b).ok_or(())).transpose().ok()?;
    if !fits || bf.as_ref().is_some_and(|b| values(b).len() != cout) {
        return None;
    }
    let factors = snake.map(|act| crate::conv_bf16::SnakeFactors {
        freq: &act.freq,
        inv_mag: &act.inv_mag,
    });
    let accumulate = residual.is_some();
    let mut dest = Destination::new(residual.take(), b * cout * tout);
    // SAFETY: `native_bf16` returned a kernel this CPU runs (`Bf16Kernel::current`); the
    // sizes were checked above.
    unsafe {
        crate::conv_bf16::conv1d(
            kernel,
            values(&xf),
            [b, cin, t],
            wf.as_slice::<bf16>().expect("checked by native_bf16"),
            [cout, k],
            bf.as_ref().map(values),
            padding,
            dilation,
            factors,
            dest.as_mut_slice(),
            accumulate,
        );
    }
    Some(dest.into_tensor([b, cout, tout], &x.device()))
}

/// [`conv_transpose1d`] for a bf16 kernel on the native bf16 kernels, or `None`.
#[cfg(target_arch = "x86_64")]
fn conv_transpose1d_bf16_native(
    x: &Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Option<Tensor<3>> {
    let [b, cin, t] = x.dims();
    let [wcin, cout, k] = weight.dims();
    if wcin != cin || stride == 0 || t == 0 || (t - 1) * stride + k <= 2 * padding {
        return None;
    }
    let tout = (t - 1) * stride + k - 2 * padding;
    let xf = flex_f32(x)?;
    let (wf, kernel) = native_bf16(weight)?;
    let bf = bias.map(|b| flex_f32(b).ok_or(())).transpose().ok()?;
    if bf.as_ref().is_some_and(|b| values(b).len() != cout) {
        return None;
    }
    let mut out = vec![0.0f32; b * cout * tout];
    // SAFETY: `native_bf16` returned a kernel this CPU runs (`Bf16Kernel::current`); the
    // sizes were checked above.
    unsafe {
        crate::conv_bf16::conv_transpose1d(
            kernel,
            values(&xf),
            [b, cin, t],
            wf.as_slice::<bf16>().expect("checked by native_bf16"),
            [cout, k],
            bf.as_ref().map(values),
            stride,
            padding,
            &mut out,
        );
    }
    Some(Tensor::from_data(
        TensorData::new(out, [b, cout, tout]),
        &x.device(),
    ))
}

/// Where a convolution writes: a fresh buffer, or a residual tensor's own storage.
enum Destination {
    Fresh(Vec<f32>),
    InPlace(burn::backend::flex::FlexTensor),
}

impl Destination {
    /// A zeroed buffer of `len` values, or `residual`'s values (its own storage when nothing
    /// else references it and it is contiguous from offset 0; otherwise a copy).
    fn new(residual: Option<Tensor<3>>, len: usize) -> Self {
        let Some(r) = residual else {
            return Destination::Fresh(vec![0.0; len]);
        };
        // `residual_fits` checked that this is a contiguous f32 flex tensor.
        let mut prim = r
            .try_into_primitive::<burn::backend::Flex>()
            .expect("a flex tensor (checked by the caller)");
        if prim.layout().contiguous_offsets() == Some((0, len))
            && prim
                .try_storage_mut::<f32>()
                .is_some_and(|s| s.len() == len)
        {
            return Destination::InPlace(prim);
        }
        let shared = Tensor::<3>::from_primitive::<burn::backend::Flex>(prim);
        let values = shared
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 data (checked by the caller)");
        Destination::Fresh(values)
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        match self {
            Destination::Fresh(v) => v,
            Destination::InPlace(prim) => prim
                .try_storage_mut::<f32>()
                .expect("checked unique in Destination::new"),
        }
    }

    fn into_tensor(self, shape: [usize; 3], device: &burn::tensor::Device) -> Tensor<3> {
        match self {
            Destination::Fresh(v) => Tensor::from_data(TensorData::new(v, shape), device),
            Destination::InPlace(prim) => Tensor::from_primitive::<burn::backend::Flex>(prim),
        }
    }
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
    if weight.dtype() == DType::BF16 && x.dtype() == DType::F32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(out) = conv_transpose1d_bf16_native(&x, weight, bias, stride, padding) {
            return out;
        }
        return conv_transpose1d(x, &widen(weight), bias, stride, padding);
    }
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

/// Adds the bias (if any) to columns `[c0, c1)` of a `[rows, width]` row-major block.
///
/// # Safety
/// As [`init_columns`].
unsafe fn add_bias_columns(
    out: *mut f32,
    width: usize,
    rows: usize,
    c0: usize,
    c1: usize,
    bias: Option<&[f32]>,
) {
    let Some(bias) = bias else { return };
    for (r, &value) in bias.iter().enumerate().take(rows) {
        // SAFETY: the caller owns columns [c0, c1) of every row.
        let row = unsafe { std::slice::from_raw_parts_mut(out.add(r * width + c0), c1 - c0) };
        row.iter_mut().for_each(|v| *v += value);
    }
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
