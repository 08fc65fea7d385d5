//! A 1-D convolution along the token axis of channels-last data, computed as one matmul.
//!
//! The DiT's `linear1`, its SwiGLU convolutions and its 1x1 pre/post convolutions are torch
//! `Conv1d`s applied to `[B, N, C]` tensors (the reference permutes to channels-first and back
//! around each). Together they are about 65 % of the DiT's FLOPs, so instead of a transposed
//! convolution we unfold the input once -- the `k` zero-padded shifted copies side by side,
//! `[B, N, k * Cin]` -- and multiply it by the kernel held tap-major as `[k, Cin, Cout]`, whose
//! `[k * Cin, Cout]` reshape is the matmul weight (row `j * Cin + c` = tap `j`, channel `c`).
//! The layout transform [`audiox_core::weights::Transform::ConvAsMatmul`] fills it from the
//! official `[Cout, Cin, k]` weight: a module of this type name gets it automatically.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};

use audiox_core::precision::matmul_weight;

/// Configuration of a [`TokenConv`].
#[derive(Config, Debug)]
pub struct TokenConvConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size along the tokens (odd; zero padding `(k - 1) / 2` keeps the length).
    pub kernel_size: usize,
    /// Whether the convolution has a bias.
    #[config(default = true)]
    pub bias: bool,
}

/// A same-length convolution along tokens: `y[n] = b + sum_j W_j^T x[n + j - (k - 1) / 2]`
/// with zeros outside the sequence (torch `Conv1d(Cin, Cout, k, padding=(k - 1) / 2)` applied
/// to channels-last data).
#[derive(Module, Debug)]
pub struct TokenConv {
    /// Kernel, tap-major `[k, Cin, Cout]` (official torch weight `[Cout, Cin, k]`).
    pub weight: Param<Tensor<3>>,
    /// Bias `[Cout]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl TokenConvConfig {
    /// Builds the layer; parameters stay lazy (uniform `+-1/sqrt(k * Cin)` as torch's default
    /// when materialised without loading).
    pub fn init(&self, device: &Device) -> TokenConv {
        assert!(
            !self.kernel_size.is_multiple_of(2),
            "TokenConv needs an odd kernel, got {}",
            self.kernel_size
        );
        let fan_in = self.kernel_size * self.in_channels;
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        };
        TokenConv {
            weight: init.init_with(
                [self.kernel_size, self.in_channels, self.out_channels],
                Some(fan_in),
                Some(self.out_channels),
                device,
            ),
            bias: self
                .bias
                .then(|| init.init_with([self.out_channels], Some(fan_in), None, device)),
        }
    }
}

impl TokenConv {
    /// Kernel size `k`.
    pub fn kernel_size(&self) -> usize {
        self.weight.lazy_shape()[0]
    }

    /// `[B, N, Cin]` -> `[B, N, Cout]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_unfolded(unfold_tokens(x, self.kernel_size()))
    }

    /// The convolution of an input already unfolded by [`unfold_tokens`] with this layer's
    /// kernel size: `[B, N, k * Cin]` -> `[B, N, Cout]`. Lets layers that share an input
    /// (the SwiGLU's `w1` and `w3`) unfold it once.
    pub fn forward_unfolded(&self, unfolded: Tensor<3>) -> Tensor<3> {
        // The kernel read as `[k * c_in, c_out]`, in whatever precision it is held
        // (audiox_core::precision; an f32 kernel takes burn's `linear` as before).
        matmul_weight(
            unfolded,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
        )
    }
}

/// The `k` shifted, zero-padded copies of `x` `[B, N, C]` side by side: `[B, N, k * C]` with
/// block `j` holding `x[n + j - (k - 1) / 2]` (zeros outside `0..N`). `k = 1` returns `x`.
pub fn unfold_tokens(x: Tensor<3>, kernel_size: usize) -> Tensor<3> {
    if kernel_size == 1 {
        return x;
    }
    let [_, n, _] = x.dims();
    let pad = (kernel_size - 1) / 2;
    let padded = x.pad([(pad, pad), (0, 0)], PadMode::Constant(0.0));
    let taps = (0..kernel_size)
        .map(|j| padded.clone().narrow(1, j, n))
        .collect();
    Tensor::cat(taps, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiox_core::tensor::{from_vec, to_vec};
    use audiox_core::weights::{StateDict, WeightSource, load_module};
    use burn::tensor::module::conv1d;
    use burn::tensor::ops::ConvOptions;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                ((x >> 8) as f32 / (1u32 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The unfolded matmul equals torch's channels-first `Conv1d` on the transposed input,
    /// with the kernel loaded from the official `[Cout, Cin, k]` layout.
    #[test]
    fn matches_a_channels_first_conv1d() {
        let device = Device::flex();
        let (b, n, c_in, c_out) = (2, 7, 5, 3);
        for k in [1, 3, 5] {
            let official_w = pseudo_random(c_out * c_in * k, 11 + k as u32);
            let official_b = pseudo_random(c_out, 5);
            let dict = StateDict::from_f32(
                "memory",
                vec![
                    ("weight".into(), vec![c_out, c_in, k], official_w.clone()),
                    ("bias".into(), vec![c_out], official_b.clone()),
                ],
            )
            .unwrap();
            let conv = TokenConvConfig::new(c_in, c_out, k).init(&device);
            let (conv, _) = load_module(
                conv,
                &audiox_core::weights::Layout::new(),
                &[WeightSource::new(&dict)],
            )
            .unwrap();
            let x = from_vec(pseudo_random(b * n * c_in, 3), [b, n, c_in], &device).unwrap();
            let got = to_vec(conv.forward(x.clone()));
            let w = from_vec(official_w, [c_out, c_in, k], &device).unwrap();
            let bias = from_vec(official_b, [c_out], &device).unwrap();
            let reference = conv1d(
                x.swap_dims(1, 2),
                w,
                Some(bias),
                ConvOptions::new([1], [(k - 1) / 2], [1], 1),
            )
            .swap_dims(1, 2);
            let want = to_vec(reference);
            assert_eq!(got.len(), want.len());
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-5, "k = {k}: max err {err}");
        }
    }
}
