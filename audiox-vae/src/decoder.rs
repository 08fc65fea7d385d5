//! The Oobleck decoder: latent `[B, C, L]` -> audio `[B, channels_out, L * prod(strides)]`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use audiox_core::Result;
use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};

use crate::conv::{
    WeightNormConv1d, WeightNormConv1dConfig, WeightNormConvTranspose1d,
    WeightNormConvTranspose1dConfig,
};
use crate::residual::{ResidualUnit, residual_stack};
use crate::snake::Snake;

/// Sizes of an [`OobleckDecoder`]: the official decoder config (`decoder.config` of an
/// autoencoder section), deserialized under its official names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobleckDecoderConfig {
    /// Audio channels out (official `out_channels`).
    #[serde(rename = "out_channels")]
    pub channels_out: usize,
    /// Base width.
    pub channels: usize,
    /// Width multipliers per level (shallow to deep).
    pub c_mults: Vec<usize>,
    /// Strides per level (shallow to deep); the decoder runs them deep to shallow.
    pub strides: Vec<usize>,
    /// Latent channels in.
    pub latent_dim: usize,
    /// SnakeBeta activations (the only supported choice; default true).
    #[serde(default = "crate::vae::yes")]
    pub use_snake: bool,
    /// A final tanh (false in every AudioX-Turbo config; stored, not applied by this decoder).
    #[serde(default)]
    pub final_tanh: bool,
}

impl OobleckDecoderConfig {
    /// A decoder config with SnakeBeta activations and no final tanh.
    pub fn new(
        channels_out: usize,
        channels: usize,
        c_mults: Vec<usize>,
        strides: Vec<usize>,
        latent_dim: usize,
    ) -> Self {
        OobleckDecoderConfig {
            channels_out,
            channels,
            c_mults,
            strides,
            latent_dim,
            use_snake: true,
            final_tanh: false,
        }
    }

    /// Widths `c_0 .. c_n`: `c_0 = channels`, `c_i = channels * c_mults[i - 1]`.
    fn widths(&self) -> Vec<usize> {
        std::iter::once(self.channels)
            .chain(self.c_mults.iter().map(|m| m * self.channels))
            .collect()
    }

    /// Builds the decoder (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> OobleckDecoder {
        let w = self.widths();
        let n = self.strides.len();
        let blocks = (0..n)
            .map(|j| {
                // Deepest level first: block j goes c_{n-j} -> c_{n-j-1} with strides[n-j-1].
                let (cin, cout, s) = (w[n - j], w[n - j - 1], self.strides[n - j - 1]);
                DecoderBlock {
                    act: Snake::new(cin, device),
                    up: WeightNormConvTranspose1dConfig::new(cin, cout, 2 * s, s, s.div_ceil(2))
                        .init(device),
                    residuals: residual_stack(cout, device),
                }
            })
            .collect();
        OobleckDecoder {
            conv_in: WeightNormConv1dConfig::new(self.latent_dim, w[n], 7)
                .with_padding(3)
                .init(device),
            blocks,
            act_out: Snake::new(w[0], device),
            conv_out: WeightNormConv1dConfig::new(w[0], self.channels_out, 7)
                .with_padding(3)
                .with_bias(false)
                .init(device),
        }
    }
}

/// One up-sampling level: SnakeBeta, transposed convolution (kernel `2s`, stride `s`, padding
/// `ceil(s/2)`: exactly `x s` in length for even `s`), three residual units.
/// Official sub-modules: `layers.0` act, `layers.1` up, `layers.2..4` residuals.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// SnakeBeta on the input channels.
    pub act: Snake,
    /// Up-sampling transposed convolution.
    pub up: WeightNormConvTranspose1d,
    /// Residual units with dilations 1, 3, 9.
    pub residuals: Vec<ResidualUnit>,
}

impl DecoderBlock {
    /// `[B, in, T]` -> `[B, out, T * s]`, reporting every sub-layer output to `trace`.
    fn forward_traced(
        &self,
        x: Tensor<3>,
        name: &str,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let x = self.act.forward(x);
        trace(&format!("{name}.layers.0"), &x);
        let mut x = self.up.forward(x);
        trace(&format!("{name}.layers.1"), &x);
        for (r, unit) in self.residuals.iter().enumerate() {
            x = unit.forward(x);
            trace(&format!("{name}.layers.{}", r + 2), &x);
        }
        x
    }
}

/// The Oobleck decoder. Official layers: `layers.0` input convolution (kernel 7), `layers.1..n`
/// up-sampling blocks, `layers.n+1` SnakeBeta, `layers.n+2` output convolution (kernel 7, no
/// bias); `layers.n+3` is the identity (`final_tanh` is false in every AudioX-Turbo config).
#[derive(Module, Debug)]
pub struct OobleckDecoder {
    /// Latent -> deepest width, kernel 7.
    pub conv_in: WeightNormConv1d,
    /// Up-sampling blocks, deepest first.
    pub blocks: Vec<DecoderBlock>,
    /// Final SnakeBeta.
    pub act_out: Snake,
    /// Base width -> audio channels, kernel 7, no bias.
    pub conv_out: WeightNormConv1d,
}

impl OobleckDecoder {
    /// How our parameter names map to the official `layers.N...` names (relative to the
    /// decoder: load with the prefix `decoder.`).
    pub fn layout(&self) -> Layout {
        let n = self.blocks.len();
        Layout::new()
            .rename(r"^conv_in\.", "layers.0.")
            .rename_with(r"^blocks\.(\d+)\.", |c| {
                format!("layers.{}.", c[1].parse::<usize>().unwrap() + 1)
            })
            .rename(r"^act_out\.", &format!("layers.{}.", n + 1))
            .rename(r"^conv_out\.", &format!("layers.{}.", n + 2))
            .rename(r"\.act\.", ".layers.0.")
            .rename(r"\.up\.", ".layers.1.")
            .rename_with(r"\.residuals\.(\d+)\.", |c| {
                format!(".layers.{}.", c[1].parse::<usize>().unwrap() + 2)
            })
            .rename(r"\.act1\.", ".layers.0.")
            .rename(r"\.conv1\.", ".layers.1.")
            .rename(r"\.act2\.", ".layers.2.")
            .rename(r"\.conv2\.", ".layers.3.")
    }

    /// Product of the strides: audio samples per latent frame.
    pub fn upsampling_ratio(&self) -> usize {
        self.blocks.iter().map(|b| b.up_stride()).product()
    }

    /// Latent channels expected at the input.
    pub fn latent_dim(&self) -> usize {
        self.conv_in.channels_in()
    }

    /// `[B, C, L]` -> `[B, channels_out, L * ratio]`.
    pub fn forward(&self, latent: Tensor<3>) -> Tensor<3> {
        self.forward_traced(latent, &mut |_, _| {})
    }

    /// [`OobleckDecoder::forward`], reporting the output of every top-level layer and every
    /// sub-layer of the up-sampling blocks under its official name (`decoder.layers.1.layers.0`).
    pub fn forward_traced(
        &self,
        latent: Tensor<3>,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let mut x = self.conv_in.forward(latent);
        trace("decoder.layers.0", &x);
        for (j, block) in self.blocks.iter().enumerate() {
            let name = format!("decoder.layers.{}", j + 1);
            x = block.forward_traced(x, &name, trace);
            trace(&name, &x);
        }
        let n = self.blocks.len();
        x = self.act_out.forward(x);
        trace(&format!("decoder.layers.{}", n + 1), &x);
        x = self.conv_out.forward(x);
        trace(&format!("decoder.layers.{}", n + 2), &x);
        // `layers.n+3` is the identity (no final tanh).
        trace(&format!("decoder.layers.{}", n + 3), &x);
        x
    }
}

impl DecoderBlock {
    fn up_stride(&self) -> usize {
        self.up.stride()
    }
}

impl Component for OobleckDecoder {
    type Config = OobleckDecoderConfig;

    /// Builds the decoder and loads it from `sources` in its official names (see
    /// [`OobleckDecoder::layout`]).
    fn load(
        config: &OobleckDecoderConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let module = config.init(device);
        let layout = module.layout();
        load_module(module, &layout, sources)
    }
}
