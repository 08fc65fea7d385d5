//! Parity of the text path: fixture `t5_encoder` and the bundle's tokenizer expectations.

use audiox_core::fixtures::{Check, Fixture, FixtureSet};
use audiox_core::tensor::to_vec;
use audiox_core::weights::{Component, WeightSource};
use audiox_core::{Error, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;

use crate::conditioners::Condition;
use crate::t5::{T5Config, T5Encoder};
use crate::tokenizer::T5Tokenizer;

/// A float input tensor of the fixture.
pub(crate) fn input<const D: usize>(
    fx: &Fixture,
    name: &str,
    device: &Device,
) -> Result<Tensor<D>> {
    let t = fx.f32(name)?;
    audiox_core::tensor::from_dyn(t.values, &t.shape, device)
}

/// An integer input `[B, N]` of the fixture, as ids and as a float 0/1 mask.
pub(crate) fn int_input(fx: &Fixture, name: &str, device: &Device) -> Result<Tensor<2, Int>> {
    let t = fx.i64(name)?;
    let dims: [usize; 2] = t
        .shape
        .as_slice()
        .try_into()
        .map_err(|_| Error::input_shape(name.to_string(), "[B, N]", &t.shape))?;
    Ok(Tensor::from_data(TensorData::new(t.values, dims), device))
}

/// The float 0/1 version of an integer mask input `[B, N]`.
pub(crate) fn mask_input(fx: &Fixture, name: &str, device: &Device) -> Result<Tensor<2>> {
    Ok(int_input(fx, name, device)?.float())
}

/// Compares a float tensor with the fixture tensor `name` at its suggested tolerance.
pub(crate) fn compare<const D: usize>(fx: &Fixture, name: &str, t: Tensor<D>) -> Result<Check> {
    let shape = t.dims().to_vec();
    fx.check(name, &shape, &to_vec(t))
}

/// Compares a 0/1 tensor with an integer (or boolean) fixture tensor, exactly.
pub(crate) fn compare_exact<const D: usize>(
    fx: &Fixture,
    name: &str,
    t: Tensor<D>,
) -> Result<Check> {
    let want = fx.i64(name)?;
    let want_values: Vec<f32> = want.values.iter().map(|&v| v as f32).collect();
    let shape = t.dims().to_vec();
    Ok(Check::compare(
        name,
        &want.shape,
        &want_values,
        &shape,
        &to_vec(t),
        0.0,
        0.0,
    ))
}

/// The condition a text conditioner emits, compared with `out.{stream}_tokens` and
/// `out.{stream}_mask` of a fixture.
pub(crate) fn compare_condition(
    fx: &Fixture,
    stream: &str,
    condition: &Condition,
    exact_mask: bool,
) -> Result<Vec<Check>> {
    let tokens = format!("out.{stream}_tokens");
    let mask = format!("out.{stream}_mask");
    let mask_check = if exact_mask {
        compare_exact(fx, &mask, condition.mask.clone())?
    } else {
        let want = fx.f32(&mask)?;
        let shape = condition.mask.dims().to_vec();
        Check::compare(
            &mask,
            &want.shape,
            &want.values,
            &shape,
            &to_vec(condition.mask.clone()),
            0.0,
            0.0,
        )
    };
    Ok(vec![
        compare(fx, &tokens, condition.tokens.clone())?,
        mask_check,
    ])
}

/// Fixture `t5_encoder`: token ids and mask -> `last_hidden_state` and the masked output, with
/// the embeddings, block 0's relative position bias and every block output. The T5 sizes come
/// from the JSON `t5_config` (a Hugging Face config), the weights under their Hugging Face
/// names.
pub fn check_t5_encoder(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let config = T5Config::from_hf_json(fx.field("t5_config")?)?;
    let encoder = load_t5(fx, &config, "", device)?;
    let ids = int_input(fx, "in.input_ids", device)?;
    let mask = mask_input(fx, "in.attention_mask", device)?;
    let trace = encoder.forward_trace(ids.clone(), mask.clone())?;

    let mut checks = vec![
        compare(fx, "mid.embed", trace.embed)?,
        compare(fx, "mid.rel_bias", trace.rel_bias)?,
    ];
    for (i, block) in trace.blocks.into_iter().enumerate() {
        let name = format!("mid.block{i}");
        if fx.has(&name) {
            checks.push(compare(fx, &name, block)?);
        }
    }
    // The production path (encodes only the real-token prefix when the mask allows).
    checks.push(compare(
        fx,
        "out.masked",
        encoder.forward_masked(ids, mask)?,
    )?);
    checks.push(compare(
        fx,
        "out.last_hidden_state",
        trace.last_hidden_state,
    )?);
    Ok(checks)
}

/// The bundle's tokenizer expectations (`bundle/expected/tokenizer.json`, computed with the
/// bundle's `t5-base/tokenizer.json`): ids and mask of every prompt, compared exactly (one
/// check per prompt and quantity), plus the truncation flag and dropped-piece count.
pub fn check_tokenizer(set: &FixtureSet) -> Result<Vec<Check>> {
    let bundle = set.bundle_dir();
    let path = bundle.join("expected").join("tokenizer.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let expected: Value = serde_json::from_str(&text).map_err(|e| Error::Fixture {
        path: path.clone(),
        message: format!("invalid JSON: {e}"),
    })?;
    let bad = |m: &str| Error::Fixture {
        path: path.clone(),
        message: m.to_string(),
    };
    let max_length = expected["max_length"]
        .as_u64()
        .ok_or_else(|| bad("no max_length"))? as usize;
    let tokenizer =
        T5Tokenizer::from_file(bundle.join("t5-base").join("tokenizer.json"), max_length)?;
    let cases = expected["cases"]
        .as_array()
        .ok_or_else(|| bad("no cases"))?;
    let mut checks = Vec::with_capacity(3 * cases.len());
    for (i, case) in cases.iter().enumerate() {
        let prompt = case["text"]
            .as_str()
            .ok_or_else(|| bad("case without text"))?;
        let numbers = |key: &str| -> Result<Vec<f32>> {
            case[key]
                .as_array()
                .ok_or_else(|| bad(&format!("case {i}: no {key}")))?
                .iter()
                .map(|v| {
                    v.as_i64()
                        .map(|x| x as f32)
                        .ok_or_else(|| bad("not an integer"))
                })
                .collect()
        };
        let tokens = tokenizer.encode(prompt)?;
        let ids: Vec<f32> = tokens.ids.iter().map(|&x| x as f32).collect();
        let mask: Vec<f32> = tokens.mask.iter().map(|&m| m as u8 as f32).collect();
        let want_ids = numbers("input_ids")?;
        let want_mask = numbers("attention_mask")?;
        let untruncated = case["untruncated_length"]
            .as_u64()
            .ok_or_else(|| bad("no untruncated_length"))? as f32;
        let want_dropped = (untruncated - max_length as f32).max(0.0);
        let name = |what: &str| format!("tokenizer[{i}] {what} ({prompt:?})");
        let shape = [max_length];
        checks.push(Check::compare(
            &name("input_ids"),
            &shape,
            &want_ids,
            &shape,
            &ids,
            0.0,
            0.0,
        ));
        checks.push(Check::compare(
            &name("attention_mask"),
            &shape,
            &want_mask,
            &shape,
            &mask,
            0.0,
            0.0,
        ));
        checks.push(Check::compare(
            &name("dropped pieces"),
            &[1],
            &[want_dropped],
            &[1],
            &[tokens.dropped[0] as f32],
            0.0,
            0.0,
        ));
    }
    Ok(checks)
}

/// Loads a T5 encoder of a fixture whose weights sit under `prefix`.
pub(crate) fn load_t5(
    fx: &Fixture,
    config: &T5Config,
    prefix: &str,
    device: &Device,
) -> Result<T5Encoder> {
    Ok(T5Encoder::load(
        config,
        &[WeightSource::with_prefix(fx.weights(), prefix)],
        device,
    )?
    .0)
}
