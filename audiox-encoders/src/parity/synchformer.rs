//! Parity check against the golden fixture `synchformer`.

use burn::tensor::{Device, Tensor};

use audiox_core::Result;
use audiox_core::fixtures::{Check, Fixture};
use audiox_core::tensor::{from_dyn, to_vec};
use serde_json::Value;

use crate::synchformer::{Synchformer, SynchformerConfig, WEIGHT_PREFIX};
use audiox_core::weights::{Component, WeightSource};

/// The fixture's sizes: JSON `sizes` (frame, patch, tubelet, width, depth, heads, MLP ratio,
/// segment, stride) and `layer_norm_eps`.
pub fn synchformer_config(fx: &Fixture) -> Result<SynchformerConfig> {
    let config = SynchformerConfig::new(
        fx.size("image_size")?,
        fx.size("patch_size")?,
        fx.size("tubelet")?,
        fx.size("embed_dim")?,
        fx.size("depth")?,
        fx.size("heads")?,
        fx.size("mlp_ratio")?,
        fx.size("segment")?,
        fx.size("stride")?,
    );
    Ok(
        match fx.field("layer_norm_eps").ok().and_then(Value::as_f64) {
            Some(eps) => config.with_layer_norm_eps(eps),
            None => config,
        },
    )
}

/// `synchformer`: frames `[B, T, 3, H, W]` -> features `[B, S * t, D]`, with every recorded
/// intermediate (`mid.patch_embed`, `mid.tokens_in`, `mid.block0.{timeattn,attn,mlp}`,
/// `mid.block{i}`, `mid.norm`, `mid.per_segment`).
pub fn check_synchformer(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let config = synchformer_config(fx)?;
    let (model, _) = Synchformer::load(
        &config,
        &[WeightSource::with_prefix(fx.weights(), WEIGHT_PREFIX)],
        device,
    )?;
    let frames = fx.f32("in.frames")?;
    let frames = from_dyn::<5>(frames.values, &frames.shape, device)?;

    let mut traced: Vec<(String, Tensor<3>)> = Vec::new();
    let features = model.forward_traced(frames, &mut |name, t| {
        traced.push((format!("mid.{name}"), t.clone()))
    })?;
    traced.push(("out.features".into(), features));

    let mut checks = Vec::new();
    for (name, t) in traced {
        if !fx.has(&name) {
            continue;
        }
        // `mid.per_segment` is stored as [(B * S), 1, t, D].
        let mut shape = t.dims().to_vec();
        if name == "mid.per_segment" {
            shape.insert(1, 1);
        }
        checks.push(fx.check(&name, &shape, &to_vec(t))?);
    }
    Ok(checks)
}
