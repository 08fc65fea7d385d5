//! The same operations composed from burn's own ops: the path for non-CPU backends, and the
//! ground truth the fast kernels are tested against.

use burn::tensor::Tensor;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

/// SnakeBeta: `x + sin(e^alpha x)^2 / (e^beta + 1e-9)`, `x` `[B, C, T]`, parameters `[C]`.
pub fn snake(x: Tensor<3>, alpha: &Tensor<1>, beta: &Tensor<1>) -> Tensor<3> {
    let freq = alpha.clone().exp().unsqueeze_dims::<3>(&[0, 2]);
    let inv_mag = (beta.clone().exp() + 1e-9)
        .recip()
        .unsqueeze_dims::<3>(&[0, 2]);
    let s = (x.clone() * freq).sin();
    x + s.clone() * s * inv_mag
}

/// CLIP's quick GELU, `x * sigmoid(1.702 x)`, as burn's composed ops.
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * burn::tensor::activation::sigmoid(x.mul_scalar(crate::gelu::QUICK_GELU_SLOPE))
}

/// `silu(gate) * up` with burn's ops (the SwiGLU gate).
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(gate) * up
}

/// `conv1d` with burn's convolution.
pub fn conv1d(
    x: Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Tensor<3> {
    module::conv1d(
        x,
        weight.clone(),
        bias.cloned(),
        ConvOptions::new([stride], [padding], [dilation], 1),
    )
}

/// `conv_transpose1d` with burn's transposed convolution.
pub fn conv_transpose1d(
    x: Tensor<3>,
    weight: &Tensor<3>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Tensor<3> {
    module::conv_transpose1d(
        x,
        weight.clone(),
        bias.cloned(),
        ConvTransposeOptions::new([stride], [padding], [0], [1], 1),
    )
}

/// Softmax attention with burn's `attention` (no mask, no bias).
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: Option<f64>) -> Tensor<4> {
    module::attention(
        q,
        k,
        v,
        None,
        None,
        burn::tensor::ops::AttentionModuleOptions {
            scale,
            ..Default::default()
        },
    )
}
