//! The VAE bottleneck: the encoder's `[B, 2C, La]` output is a Gaussian posterior, sampled.

use burn::tensor::Tensor;
use burn::tensor::activation::softplus;

use audiox_core::noise::{NoiseSource, labels};
use audiox_core::{Result, tensor};

/// The posterior of the VAE bottleneck for one encoded batch.
#[derive(Debug, Clone)]
pub struct Posterior {
    /// Mean, the first C channels of the encoder output `[B, C, La]`.
    pub mean: Tensor<3>,
    /// Raw scale, the last C channels `[B, C, La]`.
    pub scale: Tensor<3>,
}

impl Posterior {
    /// Splits an encoder output `[B, 2C, La]` into mean and scale.
    pub fn from_encoder_output(moments: Tensor<3>) -> Self {
        let [_, two_c, _] = moments.dims();
        let c = two_c / 2;
        Posterior {
            mean: moments.clone().narrow(1, 0, c),
            scale: moments.narrow(1, c, c),
        }
    }

    /// Standard deviation `softplus(scale) + 1e-4`.
    pub fn stdev(&self) -> Tensor<3> {
        softplus(self.scale.clone(), 1.0) + 1e-4
    }

    /// A sample `mean + eps * stdev`, with `eps` drawn from `noise` (label
    /// [`labels::VAE_NOISE`], the mean's shape). upstream: the reference samples at inference
    /// too (it never uses the mean alone), so the audio-prompt conditioning is stochastic.
    pub fn sample(&self, noise: &mut dyn NoiseSource) -> Result<Tensor<3>> {
        let dims = self.mean.dims();
        let eps = noise.normal(labels::VAE_NOISE, &dims)?;
        let eps = tensor::from_vec(eps, dims, &self.mean.device())?;
        Ok(self.mean.clone() + eps * self.stdev())
    }
}
