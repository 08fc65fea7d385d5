//! The Oobleck encoder: audio `[B, channels_in, S]` -> `[B, 2C, S / prod(strides)]` (the VAE
//! bottleneck's mean and scale).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use audiox_core::Result;
use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};

use crate::conv::{WeightNormConv1d, WeightNormConv1dConfig};
use crate::residual::{ResidualUnit, residual_stack};
use crate::snake::Snake;

/// Sizes of an [`OobleckEncoder`]: the official encoder config (`encoder.config` of an
/// autoencoder section), deserialized under its official names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OobleckEncoderConfig {
    /// Audio channels in (official `in_channels`).
    #[serde(rename = "in_channels")]
    pub channels_in: usize,
    /// Base width.
    pub channels: usize,
    /// Width multipliers per level.
    pub c_mults: Vec<usize>,
    /// Down-sampling stride per level.
    pub strides: Vec<usize>,
    /// Output channels (2 x the VAE latent).
    pub latent_dim: usize,
    /// SnakeBeta activations (the only supported choice; default true).
    #[serde(default = "crate::vae::yes")]
    pub use_snake: bool,
}

impl OobleckEncoderConfig {
    /// An encoder config with SnakeBeta activations.
    pub fn new(
        channels_in: usize,
        channels: usize,
        c_mults: Vec<usize>,
        strides: Vec<usize>,
        latent_dim: usize,
    ) -> Self {
        OobleckEncoderConfig {
            channels_in,
            channels,
            c_mults,
            strides,
            latent_dim,
            use_snake: true,
        }
    }

    /// Builds the encoder (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> OobleckEncoder {
        let w: Vec<usize> = std::iter::once(self.channels)
            .chain(self.c_mults.iter().map(|m| m * self.channels))
            .collect();
        let n = self.strides.len();
        let blocks = (0..n)
            .map(|i| {
                let s = self.strides[i];
                EncoderBlock {
                    residuals: residual_stack(w[i], device),
                    act: Snake::new(w[i], device),
                    down: WeightNormConv1dConfig::new(w[i], w[i + 1], 2 * s)
                        .with_stride(s)
                        .with_padding(s.div_ceil(2))
                        .init(device),
                }
            })
            .collect();
        OobleckEncoder {
            conv_in: WeightNormConv1dConfig::new(self.channels_in, w[0], 7)
                .with_padding(3)
                .init(device),
            blocks,
            act_out: Snake::new(w[n], device),
            conv_out: WeightNormConv1dConfig::new(w[n], self.latent_dim, 3)
                .with_padding(1)
                .init(device),
        }
    }
}

/// One down-sampling level: three residual units (dilations 1, 3, 9), SnakeBeta, strided
/// convolution (kernel `2s`, stride `s`, padding `ceil(s/2)`: length `floor(T / s)` for even `s`).
/// Official sub-modules: `layers.0..2` residuals, `layers.3` act, `layers.4` down.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    /// Residual units.
    pub residuals: Vec<ResidualUnit>,
    /// SnakeBeta before the down-sampling.
    pub act: Snake,
    /// Down-sampling convolution.
    pub down: WeightNormConv1d,
}

/// The Oobleck encoder. Official layers: `layers.0` input convolution (kernel 7),
/// `layers.1..n` down-sampling blocks, `layers.n+1` SnakeBeta, `layers.n+2` output convolution
/// (kernel 3).
#[derive(Module, Debug)]
pub struct OobleckEncoder {
    /// Audio -> base width, kernel 7.
    pub conv_in: WeightNormConv1d,
    /// Down-sampling blocks, shallowest first.
    pub blocks: Vec<EncoderBlock>,
    /// Final SnakeBeta.
    pub act_out: Snake,
    /// Deepest width -> 2 x latent channels, kernel 3.
    pub conv_out: WeightNormConv1d,
}

impl OobleckEncoder {
    /// How our parameter names map to the official `layers.N...` names (relative to the
    /// encoder: load with the prefix `encoder.`).
    pub fn layout(&self) -> Layout {
        let n = self.blocks.len();
        Layout::new()
            .rename(r"^conv_in\.", "layers.0.")
            .rename_with(r"^blocks\.(\d+)\.", |c| {
                format!("layers.{}.", c[1].parse::<usize>().unwrap() + 1)
            })
            .rename(r"^act_out\.", &format!("layers.{}.", n + 1))
            .rename(r"^conv_out\.", &format!("layers.{}.", n + 2))
            .rename(r"\.residuals\.(\d+)\.", ".layers.$1.")
            .rename(r"\.act\.", ".layers.3.")
            .rename(r"\.down\.", ".layers.4.")
            .rename(r"\.act1\.", ".layers.0.")
            .rename(r"\.conv1\.", ".layers.1.")
            .rename(r"\.act2\.", ".layers.2.")
            .rename(r"\.conv2\.", ".layers.3.")
    }

    /// Product of the strides: audio samples per latent frame.
    pub fn downsampling_ratio(&self) -> usize {
        self.blocks.iter().map(|b| b.down.stride()).product()
    }

    /// Audio channels expected at the input.
    pub fn channels_in(&self) -> usize {
        self.conv_in.channels_in()
    }

    /// Output channels (2 x latent).
    pub fn channels_out(&self) -> usize {
        self.conv_out.channels_out()
    }

    /// Latent frames for `samples` input samples (`floor(T / s)` per level for even strides;
    /// 0 when the input is too short).
    pub fn output_length(&self, samples: usize) -> usize {
        self.blocks.iter().fold(samples, |len, b| {
            let s = b.down.stride();
            // Convolution length with kernel 2s and padding ceil(s/2) on both sides.
            (len + 2 * s.div_ceil(2))
                .checked_sub(2 * s)
                .map_or(0, |l| l / s + 1)
        })
    }

    /// Output frames at each end of the encoding of a constant (all-zero) input of `samples`
    /// samples that the convolutions' zero padding can reach; every other frame equals the
    /// interior value. `None` when the input is too short to have an interior frame.
    pub fn zero_input_edges(&self, samples: usize) -> Option<(usize, usize)> {
        let mut len = samples;
        let mut edges = (0, 0);
        let conv = |c: &WeightNormConv1d, len: &mut usize, edges: (usize, usize)| {
            let out = c.edge_reach(*len, edges);
            *len = c.output_length(*len);
            out
        };
        edges = conv(&self.conv_in, &mut len, edges)?;
        for block in &self.blocks {
            for unit in &block.residuals {
                // x + conv2(conv1(x)): the branch reaches at least as far as x.
                let mut branch_len = len;
                let reached = conv(&unit.conv1, &mut branch_len, edges)?;
                edges = conv(&unit.conv2, &mut branch_len, reached)?;
            }
            edges = conv(&block.down, &mut len, edges)?;
        }
        conv(&self.conv_out, &mut len, edges)
    }

    /// The encoding `[1, 2C, La]` of `samples` zero samples (a silent prompt), computed on a
    /// short zero input: with a constant input every layer is constant away from its ends, so
    /// the encoding is its `left` first frames, one interior frame repeated, and its `right`
    /// last frames ([`OobleckEncoder::zero_input_edges`]). A short input with the same length
    /// modulo the down-sampling ratio has the same ends; it keeps two interior frames. At full
    /// size this runs 18 of 215 latent frames. Equal to `forward` on zeros up to the rounding
    /// of the matmul blocking (tested).
    pub fn forward_zeros(&self, samples: usize, device: &Device) -> Tensor<3> {
        let zeros = |n| Tensor::zeros([1, self.channels_in(), n], device);
        let full_frames = self.output_length(samples);
        let ratio = self.downsampling_ratio();
        let Some((left, right)) = self.zero_input_edges(samples) else {
            return self.forward(zeros(samples));
        };
        let keep = left + right + 2;
        let cut = full_frames.saturating_sub(keep);
        let short = samples - cut * ratio;
        if cut == 0
            || self.output_length(short) != keep
            || self.zero_input_edges(short) != Some((left, right))
        {
            return self.forward(zeros(samples));
        }
        let encoded = self.forward(zeros(short)); // [1, 2C, keep]
        let interior = encoded.clone().narrow(2, left, 1);
        let [_, c, _] = encoded.dims();
        Tensor::cat(
            vec![
                encoded.clone().narrow(2, 0, left),
                interior.expand([1, c, full_frames - left - right]),
                encoded.narrow(2, keep - right, right),
            ],
            2,
        )
    }

    /// `[B, channels_in, S]` -> `[B, 2C, La]`.
    pub fn forward(&self, audio: Tensor<3>) -> Tensor<3> {
        self.forward_traced(audio, &mut |_, _| {})
    }

    /// [`OobleckEncoder::forward`], reporting the output of every top-level layer under its
    /// official name (`encoder.layers.2`).
    pub fn forward_traced(
        &self,
        audio: Tensor<3>,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let mut x = self.conv_in.forward(audio);
        trace("encoder.layers.0", &x);
        for (i, block) in self.blocks.iter().enumerate() {
            for unit in &block.residuals {
                x = unit.forward(x);
            }
            x = block.down.forward_after(&block.act, x);
            trace(&format!("encoder.layers.{}", i + 1), &x);
        }
        let n = self.blocks.len();
        x = self.act_out.forward(x);
        trace(&format!("encoder.layers.{}", n + 1), &x);
        x = self.conv_out.forward(x);
        trace(&format!("encoder.layers.{}", n + 2), &x);
        x
    }
}

impl Component for OobleckEncoder {
    type Config = OobleckEncoderConfig;

    /// Builds the encoder and loads it from `sources` in its official names (see
    /// [`OobleckEncoder::layout`]).
    fn load(
        config: &OobleckEncoderConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let module = config.init(device);
        let layout = module.layout();
        load_module(module, &layout, sources)
    }
}
