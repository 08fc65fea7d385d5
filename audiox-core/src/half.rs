//! Keeping half-precision activations (a GPU device computing in f16 or bf16, see
//! `audiox::select_device`) finite, without changing what f32 computes.
//!
//! Three things leave the f16 range (largest finite value 65504) in this model family:
//!
//! * a masking constant: `f32::MIN` is `-inf` in f16, and `0 * -inf` is NaN, so every
//!   unmasked key of a masked softmax would poison its row. [`mask_min`] is the compute type's
//!   own most negative finite value;
//! * statistics over an axis: a sum of squares over a few hundred features easily passes
//!   65504. [`rms_norm`], [`layer_norm`] and [`std_dev`] compute them in f32 and cast the result
//!   back (burn's own `LayerNorm` and `RmsNorm` modules already do this);
//! * T5's residual stream, whose feed-forward outputs grow past the f16 range in trained
//!   checkpoints; [`clamp_f16`] keeps it finite, as the T5 reference does in f16.
//!
//! Every function here is the plain f32 computation, operation for operation, when its input
//! is f32, so f32 results stay bit-identical.
//!
//! ```
//! use audiox_core::half::{clamp_f16, mask_min};
//! use burn::tensor::{DType, Device, Tensor};
//!
//! assert_eq!(mask_min(DType::F16), -65504.0);
//! assert_eq!(mask_min(DType::F32), f32::MIN as f64);
//! // f32 tensors are never clamped.
//! let x = Tensor::<1>::from_floats([1e6, -1e6], &Device::flex());
//! assert_eq!(clamp_f16(x.clone()).into_data(), x.into_data());
//! ```

use burn::tensor::{DType, FloatDType, Tensor};

/// How far below the largest finite f16 value [`clamp_f16`] clamps, so that a following
/// addition of moderate size cannot overflow again.
pub const F16_CLAMP_MARGIN: f64 = 1000.0;

/// Whether `dtype` is a 16-bit float type (f16 or bf16).
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// The type in which statistics of a `dtype` tensor are computed: f32 for the 16-bit float
/// types, `None` (the tensor's own type) otherwise.
pub fn stats_dtype(dtype: DType) -> Option<FloatDType> {
    is_half(dtype).then_some(FloatDType::F32)
}

/// The most negative finite value of the float type `dtype`: the additive bias of a masked
/// attention key (`f32::MIN` for f32 and any non-float type, `-65504` for f16).
pub fn mask_min(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => ::half::f16::MIN.to_f64(),
        DType::BF16 => ::half::bf16::MIN.to_f64(),
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    }
}

/// The largest magnitude [`clamp_f16`] lets through: the largest finite f16 minus
/// [`F16_CLAMP_MARGIN`].
pub fn f16_clamp_limit() -> f64 {
    ::half::f16::MAX.to_f64() - F16_CLAMP_MARGIN
}

/// `x` clamped to `[-limit, limit]` ([`f16_clamp_limit`]) when it is an f16 tensor; any
/// other tensor (f32, bf16 with its f32-like range) is returned untouched.
pub fn clamp_f16<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() != DType::F16 {
        return x;
    }
    let limit = f16_clamp_limit();
    x.clamp(-limit, limit)
}

/// Weightless RMS normalisation over the last axis, `x / sqrt(mean(x^2) + eps)`, with the
/// mean of squares of a half-precision `x` taken in f32.
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    match stats_dtype(x.dtype()) {
        None => {
            let ms = x.clone().square().mean_dim(D - 1);
            x / ms.add_scalar(eps).sqrt()
        }
        Some(wide) => {
            let dtype: FloatDType = x.dtype().into();
            let ms = x.clone().cast(wide).square().mean_dim(D - 1);
            x / ms.add_scalar(eps).sqrt().cast(dtype)
        }
    }
}

/// burn's `layer_norm` over the last axis (`gamma` and `beta` `[features]`), computed in f32
/// for a half-precision `x` (input and parameters widened, result cast back).
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    eps: f64,
) -> Tensor<D> {
    use burn::tensor::module::layer_norm as norm;
    match stats_dtype(x.dtype()) {
        None => norm(x, gamma, beta, eps),
        Some(wide) => {
            let dtype: FloatDType = x.dtype().into();
            norm(
                x.cast(wide),
                gamma.cast(wide),
                beta.map(|b| b.cast(wide)),
                eps,
            )
            .cast(dtype)
        }
    }
}

/// The unbiased standard deviation of `x` along `dim` (kept as an axis of size 1), with the
/// variance of a half-precision `x` taken in f32.
pub fn std_dev<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    match stats_dtype(x.dtype()) {
        None => x.var(dim).sqrt(),
        Some(wide) => {
            let dtype: FloatDType = x.dtype().into();
            x.cast(wide).var(dim).sqrt().cast(dtype)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        crate::tensor::to_vec(t)
    }

    fn finite(v: &[f32]) -> bool {
        v.iter().all(|x| x.is_finite())
    }

    #[test]
    fn mask_min_is_finite_in_its_type() {
        assert_eq!(mask_min(DType::F16), -65504.0);
        assert!(::half::f16::from_f64(mask_min(DType::F16)).is_finite());
        assert!(::half::bf16::from_f64(mask_min(DType::BF16)).is_finite());
        assert_eq!(mask_min(DType::F32) as f32, f32::MIN);
        // f32::MIN itself overflows f16: the reason for this function.
        assert!(::half::f16::from_f32(f32::MIN).is_infinite());
    }

    #[test]
    fn f32_is_computed_as_before() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 3.0), &device);
        let ms = x.clone().square().mean_dim(2);
        let plain = x.clone() / ms.add_scalar(1e-6).sqrt();
        assert_eq!(values(rms_norm(x.clone(), 1e-6)), values(plain));
        let g = Tensor::<1>::random([16], Distribution::Default, &device);
        let b = Tensor::<1>::random([16], Distribution::Default, &device);
        let want = burn::tensor::module::layer_norm(x.clone(), g.clone(), Some(b.clone()), 1e-5);
        assert_eq!(
            values(layer_norm(x.clone(), g, Some(b), 1e-5)),
            values(want)
        );
        assert_eq!(
            values(std_dev(x.clone(), 1)),
            values(x.clone().var(1).sqrt())
        );
        assert_eq!(values(clamp_f16(x.clone() * 1e6)), values(x * 1e6));
    }

    /// Values whose squares overflow f16 (300^2 = 90000 > 65504): the f16 statistics stay
    /// finite and agree with f32 to f16 accuracy.
    #[test]
    fn half_statistics_do_not_overflow() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 4, 64], Distribution::Normal(0.0, 300.0), &device);
        let h = x.clone().cast(FloatDType::F16);
        // The naive f16 mean of squares overflows.
        assert!(!finite(&values(h.clone().square().mean_dim(2))));
        let close = |got: Vec<f32>, want: Vec<f32>| {
            assert!(finite(&got));
            let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err <= 2e-3 * peak, "{err} vs peak {peak}");
        };
        let got = rms_norm(h.clone(), 1e-6);
        assert_eq!(got.dtype(), DType::F16);
        close(values(got), values(rms_norm(x.clone(), 1e-6)));
        let g = Tensor::<1>::ones([64], &device);
        let got = layer_norm(h.clone(), g.clone().cast(FloatDType::F16), None, 1e-5);
        assert_eq!(got.dtype(), DType::F16);
        close(values(got), values(layer_norm(x.clone(), g, None, 1e-5)));
        let got = std_dev(h.clone(), 2);
        assert_eq!(got.dtype(), DType::F16);
        close(values(got), values(std_dev(x, 2)));
    }

    #[test]
    fn clamp_keeps_f16_finite_and_leaves_small_values() {
        let device = Device::flex();
        let x = Tensor::<1>::from_floats([60000.0, -60000.0, 1.5, -2.25], &device)
            .cast(FloatDType::F16);
        // Doubling overflows to inf; clamped, it is finite again, with room left for one more
        // addition of up to the margin.
        let clamped = clamp_f16(x.clone() * 2.0);
        let v = values(clamped.clone());
        assert!(!finite(&values(x * 2.0)));
        assert!(finite(&v));
        assert_eq!(v[2], 3.0);
        assert_eq!(v[3], -4.5);
        assert!(finite(&values(clamped.add_scalar(F16_CLAMP_MARGIN))));
    }
}
