//! The DiT block's feed-forward: SwiGLU whose three projections are kernel-3 convolutions
//! along the tokens.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use audiox_core::nn::silu_mul;

use crate::token_conv::{TokenConv, TokenConvConfig, unfold_tokens};

/// Configuration of a [`ConvSwiGlu`].
#[derive(Config, Debug)]
pub struct ConvSwiGluConfig {
    /// Width `E`.
    pub width: usize,
    /// Hidden width (`DitConfig::ffn_hidden`: 4096 at full size).
    pub hidden: usize,
    /// Kernel size along the tokens.
    #[config(default = 3)]
    pub kernel_size: usize,
}

/// `w2(SiLU(w1(x)) * w3(x))` with bias-free token convolutions (official `ffn`).
#[derive(Module, Debug)]
pub struct ConvSwiGlu {
    /// Gate projection `E -> hidden`.
    pub w1: TokenConv,
    /// Output projection `hidden -> E`.
    pub w2: TokenConv,
    /// Up projection `E -> hidden`.
    pub w3: TokenConv,
}

impl ConvSwiGluConfig {
    /// Builds the layer; parameters stay lazy.
    pub fn init(&self, device: &Device) -> ConvSwiGlu {
        let conv = |i, o| {
            TokenConvConfig::new(i, o, self.kernel_size)
                .with_bias(false)
                .init(device)
        };
        ConvSwiGlu {
            w1: conv(self.width, self.hidden),
            w2: conv(self.hidden, self.width),
            w3: conv(self.width, self.hidden),
        }
    }
}

impl ConvSwiGlu {
    /// `[B, N, E]` -> `[B, N, E]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // w1 and w3 read the same unfolded input.
        let unfolded = unfold_tokens(x, self.w1.kernel_size());
        let gate = self.w1.forward_unfolded(unfolded.clone());
        let up = self.w3.forward_unfolded(unfolded);
        self.w2.forward(silu_mul(gate, up))
    }
}
