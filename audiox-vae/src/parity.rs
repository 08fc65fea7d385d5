//! Parity checks against the golden fixtures `vae_decoder` and `vae_encoder`.

use burn::tensor::{Device, Tensor};

use audiox_core::Result;
use audiox_core::fixtures::{Check, Fixture};
use audiox_core::noise::{ReplayNoise, labels};
use audiox_core::tensor::{from_dyn, to_vec};
use audiox_core::weights::{Component, WeightSource};

use crate::bottleneck::Posterior;
use crate::decoder::OobleckDecoder;
use crate::encoder::OobleckEncoder;
use crate::vae::VaeConfig;

/// Where the main VAE's section lies in a model config file.
pub const VAE_SECTION: &str = "model.pretransform.config";

/// The VAE section of a fixture's config, checked.
pub fn vae_config(fx: &Fixture) -> Result<VaeConfig> {
    let config: VaeConfig = fx.config_section(VAE_SECTION)?;
    config.validate(VAE_SECTION)?;
    Ok(config)
}

fn check_tensor(fx: &Fixture, name: &str, t: &Tensor<3>, checks: &mut Vec<Check>) -> Result<()> {
    if fx.has(name) {
        checks.push(fx.check(name, &t.dims(), &to_vec(t.clone()))?);
    }
    Ok(())
}

/// `vae_decoder`: latent -> audio, with every traced layer output (`mid.decoder.*`).
pub fn check_vae_decoder(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let config = vae_config(fx)?;
    let (decoder, _) = OobleckDecoder::load(
        &config.decoder,
        &[WeightSource::with_prefix(fx.weights(), "decoder.")],
        device,
    )?;
    let latent = fx.f32("in.latent")?;
    let latent = from_dyn::<3>(latent.values, &latent.shape, device)?;
    let mut checks = Vec::new();
    let mut traced = Vec::new();
    let audio = decoder.forward_traced(latent, &mut |name, t| {
        traced.push((format!("mid.{name}"), t.clone()))
    });
    for (name, t) in &traced {
        check_tensor(fx, name, t, &mut checks)?;
    }
    check_tensor(fx, "out.audio", &audio, &mut checks)?;
    Ok(checks)
}

/// `vae_encoder`: audio -> posterior -> sampled latent (replaying `rng.vae_noise`), with every
/// top-level layer output (`mid.encoder.*`).
pub fn check_vae_encoder(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let config = vae_config(fx)?;
    let (encoder, _) = OobleckEncoder::load(
        &config.encoder,
        &[WeightSource::with_prefix(fx.weights(), "encoder.")],
        device,
    )?;
    let audio = fx.f32("in.audio")?;
    let audio = from_dyn::<3>(audio.values, &audio.shape, device)?;
    let mut checks = Vec::new();
    let mut traced = Vec::new();
    let moments = encoder.forward_traced(audio, &mut |name, t| {
        traced.push((format!("mid.{name}"), t.clone()))
    });
    for (name, t) in &traced {
        check_tensor(fx, name, t, &mut checks)?;
    }
    check_tensor(fx, "out.pre_bottleneck", &moments, &mut checks)?;
    let posterior = Posterior::from_encoder_output(moments);
    check_tensor(fx, "out.mean", &posterior.mean, &mut checks)?;
    check_tensor(fx, "out.scale", &posterior.scale, &mut checks)?;
    check_tensor(fx, "out.stdev", &posterior.stdev(), &mut checks)?;
    let noise = fx.f32("rng.vae_noise")?;
    let mut replay = ReplayNoise::new().with_normal(labels::VAE_NOISE, &noise.shape, noise.values);
    let latent = posterior.sample(&mut replay)?;
    replay.finish()?;
    check_tensor(fx, "out.latent", &latent, &mut checks)?;
    Ok(checks)
}
