//! SnakeBeta activation with log-scale parameters.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// SnakeBeta over channels: `y = x + sin(e^alpha * x)^2 / (e^beta + 1e-9)`, per channel,
/// broadcast over time. Official parameters `alpha`, `beta` (`[C]`, stored as logarithms).
#[derive(Module, Debug)]
pub struct Snake {
    /// Log frequency per channel `[C]`.
    pub alpha: Param<Tensor<1>>,
    /// Log magnitude per channel `[C]`.
    pub beta: Param<Tensor<1>>,
}

impl Snake {
    /// A SnakeBeta over `channels` channels (parameters zero until loaded).
    pub fn new(channels: usize, device: &Device) -> Self {
        Snake {
            alpha: Initializer::Zeros.init([channels], device),
            beta: Initializer::Zeros.init([channels], device),
        }
    }

    /// `[B, C, T]` -> `[B, C, T]` (one fused pass on the CPU backend, see
    /// `audiox_kernels::snake`).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        audiox_kernels::snake(x, &self.alpha.val(), &self.beta.val())
    }
}
