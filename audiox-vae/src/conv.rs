//! Weight-normalised convolutions. The checkpoint stores `weight_g` / `weight_v`; the loader
//! fuses them once into `weight` (`W = g * v / ||v||`, see `audiox_core::weights::Transform`).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// Settings of a [`WeightNormConv1d`].
#[derive(burn::config::Config, Debug)]
pub struct WeightNormConv1dConfig {
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Zero padding on both sides.
    #[config(default = 0)]
    pub padding: usize,
    /// Dilation.
    #[config(default = 1)]
    pub dilation: usize,
    /// Whether the convolution has a bias.
    #[config(default = true)]
    pub bias: bool,
}

/// A `Conv1d` whose checkpoint weight is weight-normalised (norm per output channel).
#[derive(Module, Debug)]
pub struct WeightNormConv1d {
    /// Fused kernel `[out, in, k]` (official `weight_g` `[out, 1, 1]` and `weight_v`).
    pub weight: Param<Tensor<3>>,
    /// Bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    stride: usize,
    padding: usize,
    dilation: usize,
}

impl WeightNormConv1dConfig {
    /// Builds the layer (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> WeightNormConv1d {
        WeightNormConv1d {
            weight: Initializer::Zeros
                .init([self.channels_out, self.channels_in, self.kernel], device),
            bias: self
                .bias
                .then(|| Initializer::Zeros.init([self.channels_out], device)),
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        }
    }
}

impl WeightNormConv1d {
    /// Input channels.
    pub fn channels_in(&self) -> usize {
        self.weight.lazy_shape()[1]
    }

    /// Output channels.
    pub fn channels_out(&self) -> usize {
        self.weight.lazy_shape()[0]
    }

    /// Stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Output length for `len` input samples (0 when the input is too short).
    pub fn output_length(&self, len: usize) -> usize {
        let span = self.dilation * (self.weight.lazy_shape()[2] - 1) + 1;
        (len + 2 * self.padding)
            .checked_sub(span)
            .map_or(0, |l| l / self.stride + 1)
    }

    /// How far the zero padding reaches into the output of a constant-interior input.
    ///
    /// `edges` are the numbers of input positions at the left and right ends whose values may
    /// differ from the (constant) interior; the result is the same for the output, or `None`
    /// when no output position is interior. An output position is interior when its whole
    /// window lies on interior input positions (no padding, no edge position).
    pub fn edge_reach(&self, len: usize, edges: (usize, usize)) -> Option<(usize, usize)> {
        let (left, right) = edges;
        let n_out = self.output_length(len);
        let reach = self.dilation * (self.weight.lazy_shape()[2] - 1);
        // First interior output: j * stride - padding >= left.
        let first = (left + self.padding).div_ceil(self.stride);
        // Last interior output: j * stride - padding + reach <= len - 1 - right.
        let last = (len + self.padding).checked_sub(1 + right + reach)? / self.stride;
        if first > last || last >= n_out {
            return None;
        }
        Some((first, n_out - 1 - last))
    }

    /// `self.forward(act.forward(x))` without materialising the activation (fused on the CPU
    /// backend): `[B, in, T]` -> `[B, out, T']`.
    pub fn forward_after(&self, act: &crate::snake::Snake, x: Tensor<3>) -> Tensor<3> {
        self.snake_conv(None, act, x)
    }

    /// `residual + self.forward_after(act, x)`, accumulated into `residual`'s buffer when
    /// nothing else holds it (one full-size tensor fewer alive): `[B, out, T']`.
    pub fn forward_after_into(
        &self,
        residual: Tensor<3>,
        act: &crate::snake::Snake,
        x: Tensor<3>,
    ) -> Tensor<3> {
        self.snake_conv(Some(residual), act, x)
    }

    fn snake_conv(
        &self,
        residual: Option<Tensor<3>>,
        act: &crate::snake::Snake,
        x: Tensor<3>,
    ) -> Tensor<3> {
        let bias = self.bias.as_ref().map(|b| b.val());
        audiox_kernels::snake_conv1d_residual(
            residual,
            x,
            &act.alpha.val(),
            &act.beta.val(),
            &self.weight.val(),
            bias.as_ref(),
            self.stride,
            self.padding,
            self.dilation,
        )
    }

    /// `[B, in, T]` -> `[B, out, T']`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let bias = self.bias.as_ref().map(|b| b.val());
        audiox_kernels::conv1d(
            x,
            &self.weight.val(),
            bias.as_ref(),
            self.stride,
            self.padding,
            self.dilation,
        )
    }
}

/// Settings of a [`WeightNormConvTranspose1d`].
#[derive(burn::config::Config, Debug)]
pub struct WeightNormConvTranspose1dConfig {
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding removed from both ends.
    pub padding: usize,
}

/// A `ConvTranspose1d` whose checkpoint weight is weight-normalised. upstream: PyTorch's
/// weight norm (dim 0) normalises a transposed convolution's `[in, out, k]` kernel per *input*
/// channel; the layout's fusion does exactly that (norm over every axis but the first).
#[derive(Module, Debug)]
pub struct WeightNormConvTranspose1d {
    /// Fused kernel `[in, out, k]` (official `weight_g` `[in, 1, 1]` and `weight_v`).
    pub weight: Param<Tensor<3>>,
    /// Bias `[out]`.
    pub bias: Param<Tensor<1>>,
    stride: usize,
    padding: usize,
}

impl WeightNormConvTranspose1dConfig {
    /// Builds the layer (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> WeightNormConvTranspose1d {
        WeightNormConvTranspose1d {
            weight: Initializer::Zeros
                .init([self.channels_in, self.channels_out, self.kernel], device),
            bias: Initializer::Zeros.init([self.channels_out], device),
            stride: self.stride,
            padding: self.padding,
        }
    }
}

impl WeightNormConvTranspose1d {
    /// Stride (the up-sampling factor).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// `[B, in, T]` -> `[B, out, (T - 1) * stride - 2 * padding + k]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        audiox_kernels::conv_transpose1d(
            x,
            &self.weight.val(),
            Some(&self.bias.val()),
            self.stride,
            self.padding,
        )
    }
}
