//! The autoencoder as a whole: encode to a sampled latent, decode (whole or in chunks).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use audiox_core::config::{checked_mul, positive};
use audiox_core::noise::NoiseSource;
use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};
use audiox_core::{Error, Result};

use crate::bottleneck::Posterior;
use crate::decoder::{OobleckDecoder, OobleckDecoderConfig};
use crate::encoder::{OobleckEncoder, OobleckEncoderConfig};

pub(crate) fn yes() -> bool {
    true
}

/// A pretransform section (`model.pretransform` of the official config, and the audio-prompt
/// conditioner's `pretransform_config`): only the Oobleck autoencoder exists in this family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretransformConfig {
    /// Must be `autoencoder`.
    #[serde(rename = "type")]
    pub kind: PretransformKind,
    /// Whether the official code encodes/decodes batch items one at a time (numerically the
    /// same as batched).
    #[serde(default = "yes")]
    pub iterate_batch: bool,
    /// The autoencoder.
    pub config: VaeConfig,
}

/// Pretransform kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PretransformKind {
    /// An autoencoder (Oobleck VAE).
    #[serde(rename = "autoencoder")]
    Autoencoder,
}

/// Encoder/decoder family of an autoencoder half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OobleckKind {
    /// The Oobleck convolutional codec.
    #[serde(rename = "oobleck")]
    Oobleck,
}

/// Bottleneck of the autoencoder (`{"type": "vae"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleneckConfig {
    /// Must be `vae`.
    #[serde(rename = "type")]
    pub kind: BottleneckKind,
}

/// Bottleneck kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BottleneckKind {
    /// Gaussian VAE bottleneck: mean and softplus scale, sampled.
    #[serde(rename = "vae")]
    Vae,
}

/// An encoder or decoder as the official config writes it: `{"type": "oobleck",
/// "requires_grad": ..., "config": {...}}`; only `config` is kept (`requires_grad` is a
/// training flag).
mod oobleck_half {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::OobleckKind;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Half<C> {
        #[serde(rename = "type")]
        _kind: OobleckKind,
        #[serde(default, rename = "requires_grad")]
        _requires_grad: Option<bool>,
        config: C,
    }

    #[derive(Serialize)]
    struct HalfRef<'a, C> {
        #[serde(rename = "type")]
        kind: OobleckKind,
        config: &'a C,
    }

    pub fn serialize<C: Serialize, S: Serializer>(config: &C, s: S) -> Result<S::Ok, S::Error> {
        HalfRef {
            kind: OobleckKind::Oobleck,
            config,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, C: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<C, D::Error> {
        Ok(Half::<C>::deserialize(d)?.config)
    }
}

/// Sizes of a [`Vae`]: the official autoencoder section (`model.pretransform.config`),
/// deserialized under its official names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// The encoder (official `encoder.config`).
    #[serde(with = "oobleck_half")]
    pub encoder: OobleckEncoderConfig,
    /// The decoder (official `decoder.config`).
    #[serde(with = "oobleck_half")]
    pub decoder: OobleckDecoderConfig,
    /// The bottleneck (`vae`).
    pub bottleneck: BottleneckConfig,
    /// Latent channels after the bottleneck.
    pub latent_dim: usize,
    /// Product of the strides.
    pub downsampling_ratio: usize,
    /// Audio channels in and out.
    pub io_channels: usize,
}

impl VaeConfig {
    /// A VAE of these two halves (latent width from the decoder, ratio from the strides, audio
    /// channels from the encoder; [`VaeConfig::validate`] checks that they agree).
    pub fn new(encoder: OobleckEncoderConfig, decoder: OobleckDecoderConfig) -> Self {
        VaeConfig {
            latent_dim: decoder.latent_dim,
            downsampling_ratio: encoder
                .strides
                .iter()
                .fold(1usize, |p, &s| p.saturating_mul(s)),
            io_channels: encoder.channels_in,
            bottleneck: BottleneckConfig {
                kind: BottleneckKind::Vae,
            },
            encoder,
            decoder,
        }
    }

    /// Checks that the sizes describe a VAE this crate can build: every size positive, the
    /// halves consistent with each other and with the section's totals, and every derived size
    /// (level widths, kernel sizes, the stride product) representable. `at` is the dotted path
    /// of the section in its file (`model.pretransform.config`), used in the error's field.
    pub fn validate(&self, at: &str) -> Result<()> {
        let enc = &self.encoder;
        let dec = &self.decoder;
        for (name, mults, strides, channels) in [
            ("encoder", &enc.c_mults, &enc.strides, enc.channels),
            ("decoder", &dec.c_mults, &dec.strides, dec.channels),
        ] {
            if strides.is_empty() || mults.len() != strides.len() {
                return Err(Error::config(
                    format!("{at}.{name}.config.c_mults"),
                    format!("{} multipliers for {} strides", mults.len(), strides.len()),
                ));
            }
            let field = |k: &str| format!("{at}.{name}.config.{k}");
            positive(field("channels"), channels)?;
            for (i, (&m, &s)) in mults.iter().zip(strides).enumerate() {
                positive(field(&format!("c_mults[{i}]")), m)?;
                positive(field(&format!("strides[{i}]")), s)?;
                // upstream: the levels' kernels are `2 s` long with padding `ceil(s / 2)`, so an
                // odd stride's transposed convolution returns `s L - 1` samples, not `s L`: the
                // decoder would not give back the length the encoder took (the official configs
                // use even strides only).
                if s % 2 != 0 {
                    return Err(Error::config(
                        field(&format!("strides[{i}]")),
                        format!(
                            "{s} is odd: with kernels of 2 x stride and padding ceil(stride / 2), \
                             an odd stride does not give back the length it took; use even strides"
                        ),
                    ));
                }
                // Level widths are `channels * c_mult`; kernels are `2 * stride` long.
                checked_mul(field(&format!("c_mults[{i}]")), channels, m)?;
                checked_mul(field(&format!("strides[{i}]")), s, 2)?;
            }
            let product = strides
                .iter()
                .try_fold(1usize, |p, &s| p.checked_mul(s))
                .ok_or_else(|| {
                    Error::config(
                        field("strides"),
                        format!("the product of {strides:?} overflows"),
                    )
                })?;
            if product != self.downsampling_ratio {
                return Err(Error::config(
                    format!("{at}.downsampling_ratio"),
                    format!(
                        "{} but the {name} strides {strides:?} multiply to {product}",
                        self.downsampling_ratio
                    ),
                ));
            }
        }
        positive(format!("{at}.latent_dim"), self.latent_dim)?;
        positive(format!("{at}.io_channels"), self.io_channels)?;
        positive(format!("{at}.encoder.config.in_channels"), enc.channels_in)?;
        positive(
            format!("{at}.decoder.config.out_channels"),
            dec.channels_out,
        )?;
        checked_mul(format!("{at}.latent_dim"), self.latent_dim, 2)?;
        if !enc.use_snake || !dec.use_snake {
            return Err(Error::config(
                format!("{at}.encoder.config.use_snake"),
                "only SnakeBeta activations are supported",
            ));
        }
        if enc.latent_dim != 2 * self.latent_dim {
            return Err(Error::config(
                format!("{at}.encoder.config.latent_dim"),
                format!(
                    "{} but the VAE bottleneck needs 2 x latent_dim = {}",
                    enc.latent_dim,
                    2 * self.latent_dim
                ),
            ));
        }
        if dec.latent_dim != self.latent_dim {
            return Err(Error::config(
                format!("{at}.decoder.config.latent_dim"),
                format!(
                    "{} differs from latent_dim {}",
                    dec.latent_dim, self.latent_dim
                ),
            ));
        }
        if enc.channels_in != self.io_channels || dec.channels_out != self.io_channels {
            return Err(Error::config(
                format!("{at}.io_channels"),
                format!(
                    "{} but the encoder takes {} and the decoder gives {} channels",
                    self.io_channels, enc.channels_in, dec.channels_out
                ),
            ));
        }
        Ok(())
    }

    /// Builds the autoencoder (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> Vae {
        Vae {
            encoder: self.encoder.init(device),
            decoder: self.decoder.init(device),
        }
    }
}

/// The Oobleck VAE (official state dict: `encoder.*`, `decoder.*`, as in `vae.ckpt`).
#[derive(Module, Debug)]
pub struct Vae {
    /// Audio -> posterior moments.
    pub encoder: OobleckEncoder,
    /// Latent -> audio.
    pub decoder: OobleckDecoder,
}

impl Vae {
    /// Official names: the encoder's and decoder's layouts under `encoder.` / `decoder.`.
    pub fn layout(&self) -> Layout {
        // Each part's renames, scoped to its prefix.
        let enc = self.encoder.layout();
        let dec = self.decoder.layout();
        Layout::new()
            .rename_with(r"^encoder\.(.*)$", move |c| {
                format!("encoder.{}", enc.official_path(&c[1]))
            })
            .rename_with(r"^decoder\.(.*)$", move |c| {
                format!("decoder.{}", dec.official_path(&c[1]))
            })
    }

    /// Encodes audio `[B, channels_in, S]` and samples the posterior with `noise`:
    /// latent `[B, C, La]`.
    pub fn encode(&self, audio: Tensor<3>, noise: &mut dyn NoiseSource) -> Result<Tensor<3>> {
        self.posterior(audio)?.sample(noise)
    }

    /// The posterior of audio `[B, channels_in, S]`.
    pub fn posterior(&self, audio: Tensor<3>) -> Result<Posterior> {
        let [_, c, s] = audio.dims();
        if c != self.encoder.channels_in() || self.encoder.output_length(s) == 0 {
            return Err(Error::input_shape(
                "VAE encoder input",
                format!(
                    "[B, {}, S] with S >= {}",
                    self.encoder.channels_in(),
                    self.encoder.downsampling_ratio()
                ),
                &audio.dims(),
            ));
        }
        Ok(Posterior::from_encoder_output(self.encoder.forward(audio)))
    }

    /// Decodes a latent `[B, C, L]` to audio `[B, channels_out, L * ratio]`.
    pub fn decode(&self, latent: Tensor<3>) -> Result<Tensor<3>> {
        check_latent(&self.decoder, &latent)?;
        Ok(self.decoder.forward(latent))
    }
}

pub(crate) fn check_latent(decoder: &OobleckDecoder, latent: &Tensor<3>) -> Result<()> {
    let [b, c, l] = latent.dims();
    if b == 0 || l == 0 || c != decoder.latent_dim() {
        return Err(Error::input_shape(
            "VAE decoder input",
            format!("[B >= 1, {}, L >= 1]", decoder.latent_dim()),
            &latent.dims(),
        ));
    }
    Ok(())
}

impl Component for Vae {
    type Config = VaeConfig;

    /// Builds the autoencoder and loads it from `sources` in its official names (see
    /// [`Vae::layout`]).
    fn load(
        config: &VaeConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let module = config.init(device);
        let layout = module.layout();
        load_module(module, &layout, sources)
    }
}
