//! Comparisons with the golden fixtures `maf_block` and `mmdit_forward`.
//!
//! Each function builds the model from the fixture's own config and weights (every size comes
//! from the fixture), runs it traced, and compares every `out.*` and every `mid.*` tensor of
//! the fixture with the JSON's suggested tolerance. A `mid.*` tensor this crate does not
//! produce is reported as a failing check, except the ones listed as not computed.

use burn::tensor::{Device, Tensor};

use audiox_core::fixtures::{Check, Criterion, Fixture};
use audiox_core::tensor::{from_dyn, to_vec};
use audiox_core::weights::{Component, WeightSource};
use audiox_core::{Error, Result};

use crate::dit::{Dit, DitConfig};
use crate::maf::{MafBlock, MafBlockConfig};
use crate::trace::Trace;

/// Fixture intermediates that are not computed: the concatenated condition masks, which the
/// reference passes along but the network ignores.
const NOT_COMPUTED: [&str; 1] = ["mid.cross_attn_mask"];

fn input<const D: usize>(fx: &Fixture, name: &str, device: &Device) -> Result<Tensor<D>> {
    let t = fx.f32(name)?;
    from_dyn(t.values, &t.shape, device)
}

fn compare(fx: &Fixture, name: &str, tensor: Tensor<3>) -> Result<Check> {
    let shape = tensor.dims().to_vec();
    fx.check(name, &shape, &to_vec(tensor))
}

/// Checks for every `mid.*` tensor of the fixture from the trace.
fn compare_intermediates(fx: &Fixture, trace: &Trace) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for name in fx.names_with_prefix("mid.") {
        if NOT_COMPUTED.contains(&name.as_str()) {
            continue;
        }
        match trace.get(&name) {
            Some(entry) => checks.push(fx.check(&name, &entry.shape, &entry.values)?),
            None => {
                let (atol, rtol) = fx.tolerance(&name).unwrap_or((0.0, 0.0));
                checks.push(Check {
                    name,
                    pass: false,
                    max_abs_err: f64::INFINITY,
                    worst_excess: f64::INFINITY,
                    atol,
                    rtol,
                    shape_error: Some("not produced by audiox-mmdit".into()),
                    ref_peak: 0.0,
                    criterion: Criterion::Tolerance,
                });
            }
        }
    }
    Ok(checks)
}

/// Where the DiT's section lies in a model config file.
pub const DIT_SECTION: &str = "model.diffusion.config";
/// Where the MAF block's section lies in a model config file.
pub const MAF_SECTION: &str = "model.diffusion.gate_type_config";
/// The condition width (the MAF block's stream width, which its section does not hold).
pub const COND_DIM: &str = "model.conditioning.cond_dim";

/// The MAF block's config of a fixture: its section, with the stream width of the config's
/// `model.conditioning.cond_dim`, checked.
pub fn maf_config(fx: &Fixture) -> Result<MafBlockConfig> {
    let config = fx
        .config_section::<MafBlockConfig>(MAF_SECTION)?
        .with_width(fx.config_section(COND_DIM)?);
    config.validate(MAF_SECTION)?;
    Ok(config)
}

/// The DiT's config of a fixture: its section (which must hold `_latent_seq_len`, as every
/// fixture's does), checked, with `Nctx` context tokens (the streams' sizes are not in the
/// section).
pub fn dit_config(fx: &Fixture, context_tokens: usize) -> Result<DitConfig> {
    let config: DitConfig = fx.config_section(DIT_SECTION)?;
    config.validate(DIT_SECTION)?;
    if config.latent_seq_len.is_none() {
        return Err(Error::config(
            format!("{DIT_SECTION}._latent_seq_len"),
            "a fixture's config must give the sequence length",
        ));
    }
    Ok(config.with_context_tokens(context_tokens))
}

/// The MAF block of a fixture, loaded from its `maf_block.*` weights.
fn load_maf(fx: &Fixture, device: &Device) -> Result<MafBlock> {
    let (block, _) = MafBlock::load(
        &maf_config(fx)?,
        &[WeightSource::with_prefix(fx.weights(), "maf_block.")],
        device,
    )?;
    Ok(block)
}

/// The three input streams `(text, video, audio)` of a fixture.
fn streams(fx: &Fixture, device: &Device) -> Result<[Tensor<3>; 3]> {
    Ok([
        input(fx, "in.text_tokens", device)?,
        input(fx, "in.video_tokens", device)?,
        input(fx, "in.audio_tokens", device)?,
    ])
}

/// Fixture `maf_block`: the fused context, the refined streams and every intermediate.
pub fn check_maf_block(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let maf = load_maf(fx, device)?;
    let [text, video, audio] = streams(fx, device)?;
    let mut trace = Trace::new();
    let refined = maf.refine_traced(text, video, audio, &mut trace)?;
    let mut checks = compare_intermediates(fx, &trace)?;
    checks.push(compare(fx, "out.text_refined", refined.text.clone())?);
    checks.push(compare(fx, "out.video_refined", refined.video.clone())?);
    checks.push(compare(fx, "out.audio_refined", refined.audio.clone())?);
    checks.push(compare(fx, "out.cross_attn_cond", refined.context())?);
    Ok(checks)
}

/// Fixture `mmdit_forward`: MAF, then one DiT call (prepared conditioning + forward), with
/// every intermediate.
pub fn check_mmdit_forward(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let maf = load_maf(fx, device)?;
    let [text, video, audio] = streams(fx, device)?;
    let context = maf.forward(text, video, audio)?;

    // Nctx follows the fixture's streams (a test config may not carry the stream sizes).
    let dit_config = dit_config(fx, context.dims()[1])?;
    let (dit, _) = Dit::load(
        &dit_config,
        &[WeightSource::with_prefix(fx.weights(), "model.model.")],
        device,
    )?;

    let x = input(fx, "in.x", device)?;
    let t = input(fx, "in.t", device)?;
    let mut trace = Trace::new();
    trace.record("mid.cross_attn_cond", &context);
    let prepared = dit.prepare_traced(context, &mut trace)?;
    let v = dit.forward_traced(x, t, &prepared, &mut trace)?;
    let mut checks = compare_intermediates(fx, &trace)?;
    checks.push(compare(fx, "out.v", v)?);
    Ok(checks)
}

/// The DiT of a fixture holding `model.model.*` weights, with `Nctx` taken from the weights.
/// Shared by tests and tools that run other fixtures through the network.
pub fn load_fixture_dit(fx: &Fixture, device: &Device) -> Result<Dit> {
    let key = "model.model.transformer.proj_mm_seq_len.weight";
    let stored = fx.weights().get(key).ok_or_else(|| Error::MissingWeight {
        key: key.into(),
        param: "proj_mm_seq_len.weight".into(),
        sources: vec![fx.weights().path().to_path_buf()],
    })?;
    let context_tokens = stored.shape()[1];
    let dit_config = dit_config(fx, context_tokens)?;
    let (dit, _) = Dit::load(
        &dit_config,
        &[WeightSource::with_prefix(fx.weights(), "model.model.")],
        device,
    )?;
    Ok(dit)
}

/// The MAF block of a fixture holding `maf_block.*` weights.
pub fn load_fixture_maf(fx: &Fixture, device: &Device) -> Result<MafBlock> {
    load_maf(fx, device)
}
