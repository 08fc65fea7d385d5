//! The Oobleck residual unit.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::conv::{WeightNormConv1d, WeightNormConv1dConfig};
use crate::snake::Snake;

/// `y = x + conv2(act2(conv1(act1(x))))` with `conv1` a kernel-7 dilated convolution
/// (length-preserving zero padding `3 * dilation`) and `conv2` a 1x1 convolution.
/// Official sub-modules: `layers.0` act1, `layers.1` conv1, `layers.2` act2, `layers.3` conv2.
#[derive(Module, Debug)]
pub struct ResidualUnit {
    /// First SnakeBeta.
    pub act1: Snake,
    /// Kernel-7 dilated convolution.
    pub conv1: WeightNormConv1d,
    /// Second SnakeBeta.
    pub act2: Snake,
    /// 1x1 convolution.
    pub conv2: WeightNormConv1d,
}

impl ResidualUnit {
    /// A unit on `channels` channels with the given dilation.
    pub fn new(channels: usize, dilation: usize, device: &Device) -> Self {
        ResidualUnit {
            act1: Snake::new(channels, device),
            conv1: WeightNormConv1dConfig::new(channels, channels, 7)
                .with_dilation(dilation)
                .with_padding(3 * dilation)
                .init(device),
            act2: Snake::new(channels, device),
            conv2: WeightNormConv1dConfig::new(channels, channels, 1).init(device),
        }
    }

    /// `[B, C, T]` -> `[B, C, T]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // Each SnakeBeta is fused into the convolution that reads it, and the skip connection
        // into the last one (x is unique again once conv1 has read it: updated in place).
        let y = self.conv1.forward_after(&self.act1, x.clone());
        self.conv2.forward_after_into(x, &self.act2, y)
    }
}

/// The three units of every Oobleck block, dilations 1, 3, 9.
pub(crate) fn residual_stack(channels: usize, device: &Device) -> Vec<ResidualUnit> {
    [1, 3, 9]
        .iter()
        .map(|&d| ResidualUnit::new(channels, d, device))
        .collect()
}
