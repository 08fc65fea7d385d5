//! The diffusion time embedding: learned Fourier features of `t` and a two-layer MLP.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use audiox_core::precision::linear;

/// Learned Fourier features (official `timestep_features`): `f = (2 pi t) w_j` for the learned
/// frequencies `w`, returned as `[cos f, sin f]` (cosines first).
#[derive(Module, Debug)]
pub struct FourierFeatures {
    /// Frequencies `[F / 2, 1]` (official layout, one input feature).
    pub weight: Param<Tensor<2>>,
}

impl FourierFeatures {
    /// Builds the layer for `features` outputs (even); the lazy frequencies are standard
    /// normal as upstream initialises them.
    pub fn new(features: usize, device: &Device) -> Self {
        FourierFeatures {
            weight: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([features / 2, 1], device),
        }
    }

    /// `t` `[B]` -> `[B, F]`.
    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        let [half, _] = self.weight.lazy_shape().dims();
        // upstream: `2 * pi * t` is formed first (in f32), then multiplied by each frequency.
        let scaled = t
            .mul_scalar(2.0 * std::f32::consts::PI)
            .unsqueeze_dim::<2>(1);
        let f = scaled * self.weight.val().reshape([1, half]);
        Tensor::cat(vec![f.clone().cos(), f.sin()], 1)
    }
}

/// Configuration of a [`TimestepEmbedding`].
#[derive(Config, Debug)]
pub struct TimestepEmbeddingConfig {
    /// Fourier features (256 in AudioX).
    pub features: usize,
    /// Output width (the DiT width).
    pub width: usize,
}

/// `t` -> `Linear(SiLU(Linear(fourier(t))))` (official `timestep_features` and
/// `to_timestep_embed.0` / `.2`). Its output is the DiT's prepended time token and the context
/// of its cross-attention.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// The Fourier features.
    pub features: FourierFeatures,
    /// First MLP layer (official `to_timestep_embed.0`).
    pub linear_in: Linear,
    /// Second MLP layer (official `to_timestep_embed.2`).
    pub linear_out: Linear,
}

impl TimestepEmbeddingConfig {
    /// Builds the embedding; parameters stay lazy.
    pub fn init(&self, device: &Device) -> TimestepEmbedding {
        TimestepEmbedding {
            features: FourierFeatures::new(self.features, device),
            linear_in: LinearConfig::new(self.features, self.width).init(device),
            linear_out: LinearConfig::new(self.width, self.width).init(device),
        }
    }
}

impl TimestepEmbedding {
    /// `t` `[B]` -> `(features [B, F], embedding [B, E])`.
    pub fn forward(&self, t: Tensor<1>) -> (Tensor<2>, Tensor<2>) {
        let features = self.features.forward(t);
        let hidden = silu(linear(&self.linear_in, features.clone()));
        (features, linear(&self.linear_out, hidden))
    }
}
