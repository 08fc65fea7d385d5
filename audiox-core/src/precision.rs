//! How the large matmul weights are held in memory: f32 (the default, bit-identical to the
//! reference), bf16, or int8 with per-output-channel block scales.
//!
//! A reduced weight is multiplied by `audiox_kernels::bf16` / `audiox_kernels::int8`
//! ([`linear`], [`matmul_weight`]): Intel AMX tiles, AVX512-BF16 (on AMD) or AVX512-VNNI dot
//! products where the CPU has them (int8 also AVX-VNNI or AVX2 integer products; bf16 on
//! AVX2-only CPUs an f32 register tile that widens the weight block by block), else the
//! weight widened to f32 just before its product
//! (one transient f32 copy of one weight at a time, [`widen`]). Resident memory of a converted
//! weight is half (bf16) or about a quarter (int8) of f32.
//!
//! Which parameters are converted ([`held_as`]), in the components the caller asks for (see
//! [`crate::weights::WeightSource::with_precision`]):
//! * the `weight` of every module whose type is listed in [`MATMUL_WEIGHT_MODULES`] (burn's
//!   `Linear` and the DiT's `TokenConv`) with at least two axes: held in the precision asked;
//! * the kernel of every time convolution listed in [`CONV_KERNEL_MODULES`] (the VAE's
//!   weight-normalised convolutions): held in bf16 under either reduced precision (int8 is for
//!   matmul weights only), multiplied by `audiox_kernels`' bf16 convolutions.
//!
//! Biases, norms, embeddings and other convolution kernels stay f32.
//!
//! ```
//! use audiox_core::precision::{WeightPrecision, reduce, widen};
//! use burn::tensor::{DType, Device, Tensor};
//!
//! let device = Device::flex();
//! let w = Tensor::<2>::from_floats([[0.5, -1.25], [2.0, 0.125]], &device);
//! let held = reduce(w.clone(), WeightPrecision::Bf16);
//! assert_eq!(held.dtype(), DType::BF16);
//! // These values are exact in bf16, so widening gives them back.
//! assert_eq!(widen(held).into_data(), w.into_data());
//! assert_eq!("int8".parse::<WeightPrecision>()?, WeightPrecision::Int8);
//! # Ok::<(), audiox_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use burn::backend::flex::{FlexQTensor, FlexTensor};
use burn::backend::{BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::quantization::{
    QuantScheme, QuantStore, QuantValue, QuantizedBytes, ScaleDtype, global_scale_dtype,
};
use burn::tensor::{
    Bool, DType, Device, FloatDType, Int, Tensor, TensorCreationOptions, TensorData,
};
use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// How a model's large matmul weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightPrecision {
    /// 32-bit float: the reference precision, bit-identical to the parity fixtures.
    #[default]
    F32,
    /// bfloat16 weights (half the memory), widened to f32 for each product.
    Bf16,
    /// Symmetric int8 weights with one f32 scale per output channel and block of at most 255
    /// input rows, dequantised to f32 for each product.
    Int8,
}

impl WeightPrecision {
    /// Every precision, f32 first.
    pub const ALL: [WeightPrecision; 3] = [
        WeightPrecision::F32,
        WeightPrecision::Bf16,
        WeightPrecision::Int8,
    ];

    /// The names [`FromStr`] accepts, for messages.
    pub const NAMES: &'static str = "f32, bf16 or int8";

    /// How the conditioners' matmul weights (T5, CLIP and the video conditioner, MAF) are held
    /// when the model's precision is `self`: bf16 under either reduced precision (int8 is for
    /// the diffusion transformer only), f32 under f32.
    pub fn conditioners(self) -> WeightPrecision {
        match self {
            WeightPrecision::F32 => WeightPrecision::F32,
            WeightPrecision::Bf16 | WeightPrecision::Int8 => WeightPrecision::Bf16,
        }
    }
}

impl fmt::Display for WeightPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightPrecision::F32 => "f32",
            WeightPrecision::Bf16 => "bf16",
            WeightPrecision::Int8 => "int8",
        })
    }
}

impl FromStr for WeightPrecision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(WeightPrecision::F32),
            "bf16" | "bfloat16" => Ok(WeightPrecision::Bf16),
            "int8" | "i8" | "q8" => Ok(WeightPrecision::Int8),
            other => Err(Error::InvalidRequest(format!(
                "weight precision `{other}`: expected {}",
                WeightPrecision::NAMES
            ))),
        }
    }
}

/// Module types whose `weight` is a matmul weight that a reduced precision converts.
pub const MATMUL_WEIGHT_MODULES: [&str; 2] = ["Linear", "TokenConv"];

/// Module types whose `weight` is a time-convolution kernel `[.., .., k]` that a reduced
/// precision holds in bf16 (the VAE's weight-normalised convolutions, whose fused kernel is
/// named `weight`).
pub const CONV_KERNEL_MODULES: [&str; 2] = ["WeightNormConv1d", "WeightNormConvTranspose1d"];

/// Whether the parameter at `path` (dotted), owned by a module of type `module`, with `rank`
/// axes, is a matmul weight that a reduced precision converts.
pub fn is_matmul_weight(module: &str, path: &str, rank: usize) -> bool {
    let name = path.rsplit('.').next().unwrap_or(path);
    rank >= 2 && name == "weight" && MATMUL_WEIGHT_MODULES.contains(&module)
}

/// Whether the parameter at `path`, owned by a module of type `module`, with `rank` axes, is a
/// convolution kernel that a reduced precision holds in bf16.
pub fn is_conv_kernel(module: &str, path: &str, rank: usize) -> bool {
    let name = path.rsplit('.').next().unwrap_or(path);
    rank == 3 && name == "weight" && CONV_KERNEL_MODULES.contains(&module)
}

/// How the parameter at `path`, owned by a module of type `module`, with `rank` axes, is held
/// when its component is loaded in `precision`: matmul weights in `precision`, convolution
/// kernels in bf16 under either reduced precision, everything else in f32.
///
/// ```
/// use audiox_core::precision::{WeightPrecision, held_as};
/// let int8 = WeightPrecision::Int8;
/// assert_eq!(held_as("Linear", "blocks.0.qkv.weight", 2, int8), WeightPrecision::Int8);
/// assert_eq!(held_as("WeightNormConv1d", "conv.weight", 3, int8), WeightPrecision::Bf16);
/// assert_eq!(held_as("Linear", "blocks.0.qkv.bias", 1, int8), WeightPrecision::F32);
/// ```
pub fn held_as(
    module: &str,
    path: &str,
    rank: usize,
    precision: WeightPrecision,
) -> WeightPrecision {
    if is_matmul_weight(module, path, rank) {
        precision
    } else if is_conv_kernel(module, path, rank) {
        precision.conditioners()
    } else {
        WeightPrecision::F32
    }
}

/// A matmul weight laid out the way this CPU's kernel for its precision reads it fastest: a
/// bf16 weight is held transposed (stored `[n, k]`, a strided view of the same `[.., n]`
/// tensor) where the process's bf16 kernel is AMX or AVX512-BF16 and the sizes are multiples
/// of 32 (`audiox_kernels::bf16::hold_transposed`), an int8 weight likewise (its values stored
/// `[n, k]`, scales unchanged) where the int8 kernel is an integer one (AMX, AVX512-VNNI,
/// AVX-VNNI or AVX2) and the sizes fit its tiles (`audiox_kernels::int8::prefers_transposed`);
/// anything else is returned as it is. The values do not change, only where they lie: burn
/// reads the view as any other tensor.
pub fn for_products<const D: usize>(w: Tensor<D>) -> Tensor<D> {
    match w.dtype() {
        DType::BF16 => audiox_kernels::bf16::hold_transposed(w),
        DType::QFloat(scheme) => int8_for_products(w, scheme),
        _ => w,
    }
}

/// Whether the matmul weight `w` is held transposed for this CPU's kernel ([`for_products`]):
/// a bf16 or int8 weight on the CPU backend whose values are stored `[n, k]`.
pub fn is_held_transposed<const D: usize>(w: &Tensor<D>) -> bool {
    match w.dtype() {
        DType::BF16 => audiox_kernels::bf16::is_held_transposed(w),
        DType::QFloat(_) => FlexInt8::take(w.clone())
            .is_ok_and(|held| audiox_kernels::int8::transposed_values(held.q.tensor()).is_some()),
        _ => false,
    }
}

/// An int8 weight on the CPU backend laid out for its products: held transposed (its values
/// stored `[n, k]`, a strided view of the same tensor, the scales unchanged) where
/// `audiox_kernels::int8::prefers_transposed` says so, else its values copied into a buffer of
/// exactly their size. Either way one transient copy of the values (a byte per element).
///
/// Why the copy: burn builds a quantised tensor's storage by appending the scales to the
/// values' buffer and then splitting them off again, which leaves the values in an allocation
/// larger than they are; measured at full size, the int8 request's peak resident memory was
/// 4.35 GB with burn's buffers and 3.62 GB with exact ones (2026-12-02, AMX Xeon).
fn int8_for_products<const W: usize>(w: Tensor<W>, scheme: QuantScheme) -> Tensor<W> {
    if W < 2 || global_scale_dtype(&scheme).is_some() {
        return w;
    }
    let dims: [usize; W] = w.dims();
    let n = dims[W - 1];
    let k: usize = dims[..W - 1].iter().product();
    let Some(block) = int8_block::<W>(scheme) else {
        return w;
    };
    let held = match FlexInt8::take(w) {
        Ok(held) => held,
        Err(w) => return w,
    };
    let Some(values) = held.q.tensor().as_slice::<i8>() else {
        // Already transposed, or another strided layout: left as it is.
        return held.into_tensor();
    };
    let values = if audiox_kernels::int8::prefers_transposed(k, n, block) {
        audiox_kernels::int8::hold_values_transposed(values, dims)
    } else {
        FlexTensor::from_data(TensorData::new(values.to_vec(), dims.to_vec()))
    };
    let q = FlexQTensor::new(values, scheme, held.q.scales().to_vec(), None);
    FlexInt8 {
        q,
        autodiff: held.autodiff,
    }
    .into_tensor()
}

/// The precision a tensor is held in (`F32` for any other float type).
pub fn held_precision<const D: usize>(t: &Tensor<D>) -> WeightPrecision {
    match t.dtype() {
        DType::BF16 => WeightPrecision::Bf16,
        DType::QFloat(_) => WeightPrecision::Int8,
        _ => WeightPrecision::F32,
    }
}

/// The weight `w` as an f32 tensor for a product: returned as it is when it already is f32 (no
/// copy, so f32 models compute exactly as before), widened from bf16, or dequantised from int8.
pub fn widen<const D: usize>(w: Tensor<D>) -> Tensor<D> {
    match w.dtype() {
        DType::F32 => w,
        DType::QFloat(scheme) => dequantize_int8(w, scheme),
        DType::BF16 => widen_bf16(w),
        _ => w.cast(FloatDType::F32),
    }
}

/// The weight `w` in the float type `dtype` of the activations it multiplies, so that a
/// product never mixes float types: returned as it is when it already is `dtype` (no copy),
/// else [`widen`]ed to f32 and, for a 16-bit `dtype` (a GPU device computing in f16 or bf16),
/// cast to it. With f32 activations this is [`widen`]: f32 weights are used as they are, bf16
/// and int8 ones widened, exactly as before half-precision devices existed.
pub fn weight_as<const D: usize>(w: Tensor<D>, dtype: DType) -> Tensor<D> {
    if w.dtype() == dtype {
        return w;
    }
    let wide = widen(w);
    match dtype {
        DType::F16 => wide.cast(FloatDType::F16),
        DType::BF16 => wide.cast(FloatDType::BF16),
        _ => wide,
    }
}

/// bf16 -> f32 on all cores, reading the CPU backend's buffer in place (burn's cast converts
/// one element at a time on one thread); burn's cast on other backends or layouts.
fn widen_bf16<const D: usize>(w: Tensor<D>) -> Tensor<D> {
    const CHUNK: usize = 1 << 16;
    if let Ok(flex) = w.clone().try_into_primitive::<burn::backend::Flex>()
        && let Some(src) = flex.as_slice::<bf16>()
    {
        let mut out = vec![0.0f32; src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, s)| s.convert_to_f32_slice(o));
        return Tensor::from_data(TensorData::new(out, w.dims().to_vec()), &w.device());
    }
    w.cast(FloatDType::F32)
}

/// `x W + b` for a burn `Linear` whose weight may be held in any [`WeightPrecision`] (burn's
/// own `Linear::forward` needs the weight in the input's float type). See [`matmul_weight`].
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    matmul_weight(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// `x W + b` for a matmul weight `W` of any rank read as `[rows, n]` (a `Linear` weight
/// `[k, n]`, a `TokenConv` kernel `[taps, c_in, c_out]`), `x` `[.., rows]`, `b` `[n]`:
///
/// * f32 weight: `audiox_kernels::linear_f32` on the CPU backend (burn's `linear` bit for bit,
///   with a product of few rows split over the threads by columns), else burn's `linear` on
///   the weight as it is (exactly what the model computed before weight precisions existed);
/// * bf16 weight: `audiox_kernels::bf16` (AMX tiles or, on AMD, AVX512-BF16 dot products where
///   the CPU has them: the activations are rounded to bf16 too, sums in f32; on CPUs with
///   AVX2 and FMA but without AVX-512 an f32 register tile that widens the weight block by
///   block; elsewhere the weight widened to f32 and the f32 GEMM);
/// * int8 weight: `audiox_kernels::int8` (AMX int8 tiles, AVX512-VNNI, AVX-VNNI or AVX2
///   integer products with the activations quantised per token where the CPU has them;
///   elsewhere the weight dequantised to f32 and the f32 GEMM);
///
/// and, where a kernel does not apply (another backend, a strided input), the weight widened to
/// f32 ([`widen`]) and burn's `linear`.
pub fn matmul_weight<const D: usize, const W: usize>(
    x: Tensor<D>,
    w: Tensor<W>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = w.dims();
    let n = dims[W - 1];
    let k: usize = dims[..W - 1].iter().product();
    // Weight and bias in the activations' float type (for f32 activations: `widen`).
    let dtype = x.dtype();
    let bias = bias.map(|b| weight_as(b, dtype));
    match w.dtype() {
        DType::BF16 => {
            if let Some(out) = audiox_kernels::bf16::linear(&x, &w, bias.as_ref()) {
                return out;
            }
            burn::tensor::module::linear(x, weight_as(w, dtype).reshape([k, n]), bias)
        }
        DType::QFloat(scheme) => {
            let bias_values = bias.clone().map(|b| crate::tensor::to_vec(widen(b)));
            // The flex backend's own storage, read where it lies.
            let w = match FlexInt8::take(w) {
                Ok(held) => {
                    if let Some(q) = held.transposed_view::<W>(scheme, k, n)
                        && let Some(out) =
                            audiox_kernels::int8::linear_transposed(&x, q, bias_values.as_deref())
                    {
                        return out;
                    }
                    match held.view::<W>(scheme, k, n) {
                        Some(q) => return int8_product(x, q, bias, bias_values.as_deref()),
                        None => held.into_tensor(),
                    }
                }
                Err(w) => w,
            };
            // Another backend or layout: the values and scales copied out.
            let Some(q) = quantized_weight(w.clone(), scheme, k, n) else {
                let w = weight_as(w, dtype).reshape([k, n]);
                return burn::tensor::module::linear(x, w, bias);
            };
            int8_product(x, q.view(), bias, bias_values.as_deref())
        }
        // f32 (weight_as is then the identity) and any other float type.
        _ => {
            let w = weight_as(w, dtype).reshape([k, n]);
            if let Some(out) = audiox_kernels::linear_f32(&x, &w, bias.as_ref()) {
                return out;
            }
            burn::tensor::module::linear(x, w, bias)
        }
    }
}

/// `x W + b` for an int8 weight `W` `[k, n]` on `audiox_kernels::int8`, or (a strided input)
/// `W` dequantised and burn's `linear`.
fn int8_product<const D: usize>(
    x: Tensor<D>,
    w: audiox_kernels::int8::QuantizedView<'_>,
    bias: Option<Tensor<1>>,
    bias_values: Option<&[f32]>,
) -> Tensor<D> {
    if let Some(out) = audiox_kernels::int8::linear_view(&x, w, bias_values) {
        return out;
    }
    let dtype = x.dtype();
    let w = Tensor::<2>::from_data(
        TensorData::new(w.to_f32(), vec![w.k(), w.n()]),
        TensorCreationOptions::new(x.device()).with_dtype(DType::F32),
    );
    burn::tensor::module::linear(x, weight_as(w, dtype), bias)
}

/// Rows per scale block of a rank-`W` int8 weight (`None` for one scale per tensor).
fn int8_block<const W: usize>(scheme: QuantScheme) -> Option<usize> {
    match scheme.block_size() {
        Some(b) if W >= 2 => Some(b.to_dim_vec(W)[W - 2].max(1) as usize),
        _ => None,
    }
}

/// An int8 weight taken out of its tensor as burn's flex backend holds it (its i8 values in the
/// tensor's shared buffer, its block scales beside them), so that a product borrows both where
/// they lie instead of copying them out through `into_data`.
struct FlexInt8 {
    q: FlexQTensor,
    autodiff: DispatchAutodiffContext,
}

impl FlexInt8 {
    /// The flex storage of `w`, or `w` unchanged when it is held elsewhere.
    #[expect(
        clippy::result_large_err,
        reason = "the tensor handed back is moved as burn moves tensors everywhere; boxing it would allocate"
    )]
    fn take<const W: usize>(w: Tensor<W>) -> std::result::Result<Self, Tensor<W>> {
        let DispatchTensor { kind, autodiff } = w.into_dispatch();
        match kind {
            DispatchTensorKind::Flex(BackendTensor::Quantized(q)) => Ok(Self { q, autodiff }),
            kind => Err(Tensor::from_dispatch(DispatchTensor { kind, autodiff })),
        }
    }

    /// The weight (quantised with `scheme`) read as the kernel's `[k, n]`, borrowed (`None` for
    /// a layout it cannot take in place: strided values, a per-tensor or two-level scale).
    fn view<const W: usize>(
        &self,
        scheme: QuantScheme,
        k: usize,
        n: usize,
    ) -> Option<audiox_kernels::int8::QuantizedView<'_>> {
        if global_scale_dtype(&scheme).is_some() {
            return None;
        }
        let block = int8_block::<W>(scheme)?;
        let values = self.q.tensor().as_slice::<i8>()?;
        audiox_kernels::int8::QuantizedView::from_parts(k, n, block, values, self.q.scales())
    }

    /// The weight read as the kernel's `[k, n]` when its values are held transposed
    /// ([`for_products`]), borrowed; `None` for any other layout.
    fn transposed_view<const W: usize>(
        &self,
        scheme: QuantScheme,
        k: usize,
        n: usize,
    ) -> Option<audiox_kernels::int8::TransposedView<'_>> {
        if global_scale_dtype(&scheme).is_some() {
            return None;
        }
        let block = int8_block::<W>(scheme)?;
        let values = audiox_kernels::int8::transposed_values(self.q.tensor())?;
        audiox_kernels::int8::TransposedView::from_parts(k, n, block, values, self.q.scales())
    }

    /// The tensor it was taken from.
    fn into_tensor<const W: usize>(self) -> Tensor<W> {
        Tensor::from_dispatch(DispatchTensor {
            kind: DispatchTensorKind::Flex(BackendTensor::Quantized(self.q)),
            autodiff: self.autodiff,
        })
    }
}

/// The stored values and block scales of an int8 weight made by [`quantize_int8`], copied out
/// of the tensor as the kernel's `[rows, n]` weight (`None` for a layout it cannot take).
fn quantized_weight<const W: usize>(
    w: Tensor<W>,
    scheme: QuantScheme,
    k: usize,
    n: usize,
) -> Option<audiox_kernels::int8::QuantizedWeight> {
    let shape = w.dims().to_vec();
    let (values, scales) = QuantizedBytes {
        bytes: w.into_data().into_bytes(),
        scheme,
        shape: shape.into(),
    }
    .into_vec_i8();
    let block = int8_block::<W>(scheme)?;
    audiox_kernels::int8::QuantizedWeight::from_parts(k, n, block, values, scales.block)
}

/// The f32 tensor `t` held in `precision` (`F32`, or a tensor with no element: `t` itself).
pub fn reduce<const D: usize>(t: Tensor<D>, precision: WeightPrecision) -> Tensor<D> {
    if t.shape().num_elements() == 0 {
        return t;
    }
    match precision {
        WeightPrecision::F32 => t,
        WeightPrecision::Bf16 => t.cast(FloatDType::BF16),
        WeightPrecision::Int8 => {
            let device = t.device();
            let shape = t.dims().to_vec();
            let values = crate::tensor::to_vec(widen(t));
            Tensor::from_data(quantize_int8(&values, &shape), &device)
        }
    }
}

/// A tensor of `shape` from f32 `values`, held in `precision` (a tensor with no element stays
/// f32). Nothing larger than the final tensor is allocated besides `values` itself (the
/// loader's per-tensor reading buffer).
pub fn hold<const D: usize>(
    values: Vec<f32>,
    shape: Vec<usize>,
    precision: WeightPrecision,
    device: &Device,
) -> Tensor<D> {
    let precision = if values.is_empty() {
        WeightPrecision::F32
    } else {
        precision
    };
    match precision {
        WeightPrecision::F32 => Tensor::from_data(TensorData::new(values, shape), device),
        WeightPrecision::Bf16 => {
            let halves: Vec<bf16> = values.par_iter().map(|&v| bf16::from_f32(v)).collect();
            drop(values);
            Tensor::from_data(
                TensorData::new(halves, shape),
                TensorCreationOptions::new(device.clone()).with_dtype(DType::BF16),
            )
        }
        WeightPrecision::Int8 => {
            let data = quantize_int8(&values, &shape);
            drop(values);
            Tensor::from_data(data, device)
        }
    }
}

/// [`hold`] for a matmul weight: laid out for this CPU's products as [`for_products`] would
/// lay it out, but a bf16 weight held transposed is converted and transposed in one pass from
/// `values` (no row-major bf16 copy in between: loading's peak stays the f32 reading buffer
/// plus the held tensor).
pub fn hold_matmul_weight<const D: usize>(
    values: Vec<f32>,
    shape: Vec<usize>,
    precision: WeightPrecision,
    device: &Device,
) -> Tensor<D> {
    if precision == WeightPrecision::Bf16
        && let Ok(dims) = <[usize; D]>::try_from(shape.as_slice())
        && dims.iter().product::<usize>() == values.len()
        && let Some(held) = audiox_kernels::bf16::hold_transposed_from_f32(&values, dims, device)
    {
        return held;
    }
    for_products(hold(values, shape, precision, device))
}

/// [`hold_matmul_weight`] for a 2-D matmul weight of our shape `[k, n]` whose f32 values are
/// given **transposed**, `values_nk` row-major `[n, k]` (the layout of a torch `Linear`
/// weight): where the weight would be held transposed (bf16 or int8 on the CPU backend, the
/// process's kernel preferring it), it is converted straight from that layout, without the two
/// transpositions (to `[k, n]` and back) the general path makes; the held tensor is the one
/// [`hold_matmul_weight`] would hold, value for value. Otherwise `Err(values_nk)`, untouched:
/// the caller transposes them and calls [`hold_matmul_weight`].
pub fn hold_matmul_weight_transposed<const D: usize>(
    values_nk: Vec<f32>,
    shape: &[usize],
    precision: WeightPrecision,
    device: &Device,
) -> std::result::Result<Tensor<D>, Vec<f32>> {
    let (k, n) = match shape {
        &[k, n] if D == 2 && k * n == values_nk.len() && k > 0 && n > 0 => (k, n),
        _ => return Err(values_nk),
    };
    // The general path transposes into the same `[n, k]` storage: permute the stored
    // `[n, k]` tensor to the logical `[k, n]`.
    let mut axes = [0usize; D];
    for (i, a) in axes.iter_mut().enumerate() {
        *a = (i + 1) % D;
    }
    match precision {
        WeightPrecision::Bf16 if audiox_kernels::bf16::prefers_transposed(k, n) => {
            let halves: Vec<bf16> = values_nk.par_iter().map(|&v| bf16::from_f32(v)).collect();
            let stored = Tensor::<D>::from_data(
                TensorData::new(halves, [n, k]),
                TensorCreationOptions::new(device.clone()).with_dtype(DType::BF16),
            );
            let held = stored.permute(axes);
            if audiox_kernels::bf16::is_held_transposed(&held) {
                Ok(held)
            } else {
                Err(values_nk)
            }
        }
        WeightPrecision::Int8 => {
            let block = block_rows(k);
            let on_cpu = Tensor::<1>::empty([0], device)
                .try_into_primitive::<burn::backend::Flex>()
                .is_ok();
            if !on_cpu || !audiox_kernels::int8::prefers_transposed(k, n, block) {
                return Err(values_nk);
            }
            // `quantize_int8`'s scales and values, read from the transposed layout: one scale
            // per (row block, column), `max |w| / 127`; values rounded to nearest.
            let blocks = k / block;
            let peaks: Vec<f32> = values_nk
                .par_chunks(k)
                .flat_map_iter(|column| {
                    column
                        .chunks(block)
                        .map(|b| b.iter().fold(0.0f32, |p, &v| p.max(v.abs())) / 127.0)
                        .collect::<Vec<_>>()
                })
                .collect();
            // peaks[c * blocks + rb] -> scales[rb * n + c]
            let mut scales = vec![0.0f32; blocks * n];
            for (i, &p) in peaks.iter().enumerate() {
                scales[(i % blocks) * n + i / blocks] = p;
            }
            let mut qt = vec![0i8; k * n];
            qt.par_chunks_mut(k)
                .zip(values_nk.par_chunks(k))
                .enumerate()
                .for_each(|(c, (q, column))| {
                    for (r, (q, &v)) in q.iter_mut().zip(column).enumerate() {
                        let s = scales[(r / block) * n + c];
                        *q = if s > 0.0 {
                            (v / s).round().clamp(-127.0, 127.0) as i8
                        } else {
                            0
                        };
                    }
                });
            drop(values_nk);
            let mut block_dims = vec![1u8; D];
            block_dims[D - 2] = block as u8;
            let scheme = int8_scheme(&block_dims);
            let dims: [usize; D] = shape.try_into().expect("two axes (checked above)");
            let values = audiox_kernels::int8::hold_transposed_values(qt, dims);
            Ok(FlexInt8 {
                q: FlexQTensor::new(values, scheme, scales, None),
                autodiff: DispatchAutodiffContext::default(),
            }
            .into_tensor())
        }
        _ => Err(values_nk),
    }
}

/// Rows per scale block of an int8 weight with `rows` input rows: the largest divisor of
/// `rows` that burn's block size (one byte per axis) can express, so each output channel gets
/// as few scales as possible (one per 192 rows at width 1536, one per 128 at 4096).
fn block_rows(rows: usize) -> usize {
    (1..=rows.min(255))
        .rev()
        .find(|b| rows.is_multiple_of(*b))
        .unwrap_or(1)
}

/// Symmetric int8 quantisation of a matmul weight laid out `[.., in, out]` (burn `Linear`
/// `[in, out]`, `TokenConv` `[k, in, out]`): one f32 scale per output channel and block of
/// rows (`max |w| / 127` over the block), values rounded to nearest in `-127..=127`.
pub fn quantize_int8(values: &[f32], shape: &[usize]) -> TensorData {
    let rank = shape.len();
    let cols = shape.last().copied().unwrap_or(1).max(1);
    let inner_rows = if rank >= 2 { shape[rank - 2] } else { 1 };
    let b = block_rows(inner_rows.max(1));
    let rows = values.len() / cols;
    let row_blocks = rows / b;
    // One scale per (row block, column), row-major: the layout burn's block grid uses.
    let scales: Vec<f32> = (0..row_blocks)
        .into_par_iter()
        .flat_map_iter(|rb| {
            let mut peak = vec![0.0f32; cols];
            for row in values[rb * b * cols..(rb + 1) * b * cols].chunks_exact(cols) {
                for (p, &v) in peak.iter_mut().zip(row) {
                    *p = p.max(v.abs());
                }
            }
            peak.into_iter().map(|p| p / 127.0)
        })
        .collect();
    let quantized: Vec<i8> = values
        .par_chunks(cols)
        .enumerate()
        .flat_map_iter(|(r, row)| {
            let s = &scales[(r / b) * cols..(r / b + 1) * cols];
            row.iter().zip(s).map(|(&v, &s)| {
                if s > 0.0 {
                    (v / s).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                }
            })
        })
        .collect();
    let mut block = vec![1u8; rank.max(1)];
    if rank >= 2 {
        block[rank - 2] = b as u8;
    }
    let scheme = int8_scheme(&block);
    TensorData::quantized(quantized, shape.to_vec(), scheme, &scales, None)
}

fn int8_scheme(block: &[u8]) -> QuantScheme {
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::Native)
        .per_block(block, ScaleDtype::F32)
}

/// f32 values of an int8 weight made by [`quantize_int8`], on all cores (burn's own
/// `dequantize` on the CPU backend locates each element's block with several integer
/// divisions, on one thread).
fn dequantize_int8<const D: usize>(w: Tensor<D>, scheme: QuantScheme) -> Tensor<D> {
    let device = w.device();
    let shape = w.dims().to_vec();
    let data = w.into_data();
    let (values, scales) = QuantizedBytes {
        bytes: data.into_bytes(),
        scheme,
        shape: shape.clone().into(),
    }
    .into_vec_i8();
    let cols = shape.last().copied().unwrap_or(1).max(1);
    let rank = shape.len();
    let b = match scheme.block_size() {
        Some(block) if rank >= 2 => block.to_dim_vec(rank)[rank - 2].max(1) as usize,
        _ => 0,
    };
    let block = scales.block;
    let out: Vec<f32> = if b == 0 {
        // One scale for the whole tensor.
        let s = block.first().copied().unwrap_or(0.0);
        values.par_iter().map(|&q| q as f32 * s).collect()
    } else {
        values
            .par_chunks(cols)
            .enumerate()
            .flat_map_iter(|(r, row)| {
                let s = &block[(r / b) * cols..(r / b + 1) * cols];
                row.iter().zip(s).map(|(&q, &s)| q as f32 * s)
            })
            .collect()
    };
    Tensor::from_data(TensorData::new(out, shape), &device)
}

/// Converts the matmul weights of an in-memory `module` to `precision` and its convolution
/// kernels as [`held_as`] says. Loading with [`crate::weights::WeightSource::with_precision`]
/// does the same one tensor at a time; this is for models built in memory (random weights,
/// tests), and briefly holds both copies of one weight.
pub fn convert_module<M: Module>(module: M, precision: WeightPrecision) -> M {
    if precision == WeightPrecision::F32 {
        return module;
    }
    let mut mapper = Converter {
        precision,
        path: Vec::new(),
        owners: Vec::new(),
    };
    module.map(&mut mapper)
}

struct Converter {
    precision: WeightPrecision,
    path: Vec<String>,
    owners: Vec<String>,
}

fn owner_type(owners: &[String]) -> &str {
    owners
        .iter()
        .rev()
        .find_map(|c| {
            c.strip_prefix("Struct:")
                .or_else(|| c.strip_prefix("Enum:"))
        })
        .unwrap_or("")
}

impl ModuleMapper for Converter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.owners.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.owners.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let precision = held_as(
            owner_type(&self.owners),
            &self.path.join("."),
            D,
            self.precision,
        );
        if precision == WeightPrecision::F32 {
            return param;
        }
        let matmul = is_matmul_weight(owner_type(&self.owners), &self.path.join("."), D);
        param.map(|t| {
            let held = reduce(widen(t), precision);
            if matmul { for_products(held) } else { held }
        })
    }
}

/// Bytes of a module's float parameters, by the type they are held in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldBytes {
    /// f32 parameters.
    pub f32: u64,
    /// bf16 parameters.
    pub bf16: u64,
    /// int8 parameters, their scales included.
    pub int8: u64,
    /// Parameters in any other float type.
    pub other: u64,
}

impl HeldBytes {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.f32 + self.bf16 + self.int8 + self.other
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: HeldBytes) {
        self.f32 += other.f32;
        self.bf16 += other.bf16;
        self.int8 += other.int8;
        self.other += other.other;
    }
}

/// The bytes `module`'s float parameters take, by held type (read from each tensor's dtype, so
/// a conversion that silently fell back to f32 shows here).
pub fn held_bytes<M: Module>(module: &M) -> HeldBytes {
    let mut counter = Counter(HeldBytes::default());
    module.visit(&mut counter);
    counter.0
}

struct Counter(HeldBytes);

impl ModuleVisitor for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements() as u64;
        match t.dtype() {
            DType::F32 => self.0.f32 += 4 * n,
            DType::BF16 => self.0.bf16 += 2 * n,
            DType::QFloat(scheme) => {
                let per_scale = scheme
                    .block_size()
                    .map(|b| b.to_dim_vec(D).iter().map(|&x| x as u64).product::<u64>())
                    .unwrap_or(n)
                    .max(1);
                self.0.int8 += n + 4 * n.div_ceil(per_scale);
            }
            other => self.0.other += (other.size() as u64) * n,
        }
    }

    fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<D, Int>>) {}

    fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<D, Bool>>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
            / scale
    }

    #[test]
    fn names_round_trip() {
        for p in WeightPrecision::ALL {
            assert_eq!(p.to_string().parse::<WeightPrecision>().unwrap(), p);
        }
        assert!("f16".parse::<WeightPrecision>().is_err());
    }

    #[test]
    fn empty_weights_stay_f32() {
        let device = Device::flex();
        for p in WeightPrecision::ALL {
            let t = reduce(Tensor::<2>::zeros([0, 0], &device), p);
            assert_eq!(t.dtype(), DType::F32);
            let t: Tensor<2> = hold(Vec::new(), vec![0, 4], p, &device);
            assert_eq!(t.dtype(), DType::F32);
        }
    }

    #[test]
    fn bf16_widening_matches_burns_cast() {
        let device = Device::flex();
        // Larger than one conversion chunk, so several threads take part.
        let t = Tensor::<2>::random([300, 500], Distribution::Normal(0.0, 3.0), &device)
            .cast(FloatDType::BF16);
        let ours = widen(t.clone());
        assert_eq!(ours.dtype(), DType::F32);
        assert_eq!(
            crate::tensor::to_vec(ours),
            crate::tensor::to_vec(t.cast(FloatDType::F32))
        );
    }

    #[test]
    fn int8_round_trip_is_within_half_a_step_per_channel() {
        let device = Device::flex();
        // [k, in, out] with an in-axis (300) that 255 does not divide.
        let shape = [3usize, 300, 7];
        let w = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let values = crate::tensor::to_vec(w.clone());
        let held: Tensor<3> = hold(
            values.clone(),
            shape.to_vec(),
            WeightPrecision::Int8,
            &device,
        );
        assert!(matches!(held.dtype(), DType::QFloat(_)));
        let back = crate::tensor::to_vec(widen(held));
        // Per (block, column) the error is at most half a step of that block's scale.
        let b = block_rows(300);
        assert_eq!(b, 150);
        let cols = 7;
        for (i, (x, y)) in values.iter().zip(&back).enumerate() {
            let (r, c) = (i / cols, i % cols);
            let peak = (0..b)
                .map(|j| values[((r / b) * b + j) * cols + c].abs())
                .fold(0.0f32, f32::max);
            assert!((x - y).abs() <= peak / 127.0 * 0.5 + 1e-6, "{i}: {x} {y}");
        }
        // burn's own dequantisation of the same tensor agrees.
        let held: Tensor<3> = hold(values, shape.to_vec(), WeightPrecision::Int8, &device);
        let burns = crate::tensor::to_vec(held.dequantize());
        assert_eq!(burns, back);
    }

    #[test]
    fn weights_follow_the_activations_float_type() {
        let device = Device::flex();
        let w = Tensor::<2>::random([64, 48], Distribution::Normal(0.0, 1.0), &device);
        // f32 activations: f32 weights untouched, reduced ones widened (as `widen`).
        assert_eq!(
            crate::tensor::to_vec(weight_as(w.clone(), DType::F32)),
            crate::tensor::to_vec(w.clone())
        );
        for p in [WeightPrecision::Bf16, WeightPrecision::Int8] {
            let held = reduce(w.clone(), p);
            let got = weight_as(held.clone(), DType::F32);
            assert_eq!(got.dtype(), DType::F32);
            assert_eq!(
                crate::tensor::to_vec(got),
                crate::tensor::to_vec(widen(held))
            );
        }
        // f16 activations: every held weight comes as f16, and the product stays f16.
        let layer = LinearConfig::new(64, 48).init(&device);
        let x = Tensor::<3>::random([2, 5, 64], Distribution::Default, &device);
        let want = crate::tensor::to_vec(layer.forward(x.clone()));
        let x16 = x.cast(FloatDType::F16);
        for p in WeightPrecision::ALL {
            let held = convert_module(layer.clone(), p);
            assert_eq!(weight_as(held.weight.val(), DType::F16).dtype(), DType::F16);
            let out = linear(&held, x16.clone());
            assert_eq!(out.dtype(), DType::F16, "{p}");
            let err = max_rel(&crate::tensor::to_vec(out), &want);
            assert!(err < 2e-2, "{p}: {err}");
        }
    }

    #[test]
    fn reduced_linear_is_close_and_f32_is_untouched() {
        let device = Device::flex();
        let layer = LinearConfig::new(64, 48).init(&device);
        let x = Tensor::<3>::random([2, 5, 64], Distribution::Default, &device);
        let want = crate::tensor::to_vec(layer.forward(x.clone()));
        let same = convert_module(layer.clone(), WeightPrecision::F32);
        assert_eq!(crate::tensor::to_vec(linear(&same, x.clone())), want);
        for (p, tol) in [(WeightPrecision::Bf16, 1e-2), (WeightPrecision::Int8, 2e-2)] {
            let reduced = convert_module(layer.clone(), p);
            assert_eq!(held_precision(&reduced.weight.val()), p);
            // The bias is not a matmul weight: it stays f32.
            assert_eq!(reduced.bias.as_ref().unwrap().val().dtype(), DType::F32);
            let got = crate::tensor::to_vec(linear(&reduced, x.clone()));
            let err = max_rel(&got, &want);
            assert!(err < tol && err > 0.0, "{p}: {err}");
            let bytes = held_bytes(&reduced);
            assert_eq!(bytes.f32, 4 * 48);
            match p {
                WeightPrecision::Bf16 => assert_eq!(bytes.bf16, 2 * 64 * 48),
                _ => assert_eq!(bytes.int8, 64 * 48 + 4 * 48),
            }
        }
    }

    /// The int8 product through the flex storage in place and through the copying path
    /// (values and scales copied out of the tensor) for one weight of shape `dims`.
    fn int8_both_ways<const W: usize>(dims: [usize; W], tokens: usize, with_bias: bool, seed: u64) {
        let device = Device::flex();
        let n = dims[W - 1];
        let k: usize = dims[..W - 1].iter().product();
        let rows = dims[W - 2];
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect()
        };
        let w: Tensor<W> = hold(next(k * n), dims.to_vec(), WeightPrecision::Int8, &device);
        let DType::QFloat(scheme) = w.dtype() else {
            panic!("{dims:?}: not held in int8");
        };
        let x = Tensor::<3>::from_data(
            TensorData::new(next(2 * tokens * k), [2, tokens, k]),
            &device,
        );
        let bias =
            with_bias.then(|| Tensor::<1>::from_data(TensorData::new(next(n), [n]), &device));

        // The view reads exactly what the copying path copies.
        let copied = quantized_weight(w.clone(), scheme, k, n).expect("copying path");
        let held = FlexInt8::take(w.clone()).expect("a flex tensor");
        let view = held.view::<W>(scheme, k, n).expect("a view in place");
        assert_eq!(view, copied.view(), "{dims:?}");
        assert_eq!(view.block(), block_rows(rows), "{dims:?}");
        // Borrowed from the tensor's own buffer, not copied.
        let again = FlexInt8::take(w.clone()).expect("a flex tensor");
        let other = again.view::<W>(scheme, k, n).expect("a view in place");
        assert_eq!(view.values().as_ptr(), other.values().as_ptr(), "{dims:?}");

        let bias_values = bias.clone().map(crate::tensor::to_vec);
        let old = audiox_kernels::int8::linear(&x, &copied, bias_values.as_deref())
            .expect("the kernel takes a contiguous input");
        let new = matmul_weight(x, w, bias);
        let (old, new) = (crate::tensor::to_vec(old), crate::tensor::to_vec(new));
        assert_eq!(old.len(), 2 * tokens * n);
        assert!(old.iter().any(|&v| v != 0.0), "{dims:?}");
        let same = old
            .iter()
            .zip(&new)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{dims:?}: the in-place product differs from the copying one"
        );
    }

    #[test]
    fn int8_in_place_is_bit_identical_to_the_copying_path() {
        // Blocks of a multiple of four rows (the native path where the CPU has it), of odd
        // sizes (the dequantised path), one block per column, single rows and columns.
        int8_both_ways([64, 48], 5, true, 1);
        int8_both_ways([1024, 96], 9, false, 2);
        int8_both_ways([510, 31], 3, true, 3);
        int8_both_ways([300, 7], 1, true, 4);
        int8_both_ways([17, 33], 4, false, 5);
        int8_both_ways([1, 1], 2, true, 6);
        int8_both_ways([129, 65], 7, true, 7);
        // TokenConv kernels [taps, c_in, c_out].
        int8_both_ways([3, 300, 7], 6, true, 8);
        int8_both_ways([2, 64, 37], 11, false, 9);
    }

    #[test]
    fn int8_weight_round_trips_through_the_flex_storage() {
        let device = Device::flex();
        let w: Tensor<2> = hold(
            (0..96).map(|v| v as f32 - 40.0).collect(),
            vec![12, 8],
            WeightPrecision::Int8,
            &device,
        );
        let before = w.clone().into_data();
        let back: Tensor<2> = FlexInt8::take(w).expect("flex").into_tensor();
        assert_eq!(back.into_data(), before);
        // Not an int8 tensor: handed back as it was.
        let f = Tensor::<2>::ones([3, 4], &device);
        let Err(f) = FlexInt8::take(f) else {
            panic!("an f32 tensor taken as int8");
        };
        assert_eq!(
            f.into_data(),
            Tensor::<2>::ones([3, 4], &device).into_data()
        );
    }
}
