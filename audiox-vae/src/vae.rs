//! The autoencoder as a whole: encode to a sampled latent, decode (whole or in chunks).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use audiox_core::config::AutoencoderConfig;
use audiox_core::noise::NoiseSource;
use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};
use audiox_core::{Error, Result};

use crate::bottleneck::Posterior;
use crate::decoder::{OobleckDecoder, OobleckDecoderConfig};
use crate::encoder::{OobleckEncoder, OobleckEncoderConfig};

/// Sizes of a [`Vae`].
#[derive(burn::config::Config, Debug)]
pub struct VaeConfig {
    /// The encoder.
    pub encoder: OobleckEncoderConfig,
    /// The decoder.
    pub decoder: OobleckDecoderConfig,
}

impl VaeConfig {
    /// From the official `pretransform.config` section.
    pub fn from_config(c: &AutoencoderConfig) -> Self {
        VaeConfig::new(
            OobleckEncoderConfig::from_config(&c.encoder.config),
            OobleckDecoderConfig::from_config(&c.decoder.config),
        )
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
