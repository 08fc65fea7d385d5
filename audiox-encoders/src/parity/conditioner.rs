//! Parity of the three conditioners: fixture `conditioner`.
//!
//! Every size comes from the fixture: the conditioners' own sections of the official model
//! config in the JSON (VAE, ratio range, frame rate) and its condition width, the JSON `sizes`
//! (CLIP and T5 configs, the temporal transformer's heads and depth) and the weights' shapes
//! (frames, tokens, sync rows, MLP width). The MAF
//! output `out.cross_attn_cond` and the concatenated mask `out.cross_attn_mask` belong to the
//! MMDiT crate and are not compared here.

use audiox_core::fixtures::{Check, Fixture};
use audiox_core::noise::{ReplayNoise, labels};
use audiox_core::weights::{Component, WeightSource};
use audiox_core::{Error, Result};
use burn::tensor::Device;
use serde_json::Value;

use super::text::{compare, compare_condition, input, int_input, load_t5, mask_input};
use crate::clip::ClipVisionConfig;
use crate::conditioners::{
    AudioPromptConditioner, AudioPromptConfig, Condition, PromptMask, T5ConditionerConfig,
    TemporalTransformerConfig, VideoConditioner, VideoConditionerConfig,
};
use crate::t5::T5Config;

/// Weight prefix of the video conditioner.
pub const VIDEO_PREFIX: &str = "conditioner.conditioners.video_prompt.";
/// Weight prefix of the T5 inside the text conditioner (fixtures only: officially the T5 is
/// not part of the checkpoint).
pub const TEXT_PREFIX: &str = "conditioner.conditioners.text_prompt.model.";
/// Weight prefix of the audio-prompt conditioner.
pub const AUDIO_PREFIX: &str = "conditioner.conditioners.audio_prompt.";

fn shape_of(fx: &Fixture, key: &str) -> Result<Vec<usize>> {
    fx.weights()
        .get(key)
        .map(|t| t.shape().to_vec())
        .ok_or_else(|| Error::Fixture {
            path: fx.name().into(),
            message: format!("no weight `{key}`"),
        })
}

fn sizes(fx: &Fixture, key: &str) -> Result<Value> {
    fx.field("sizes")?
        .get(key)
        .cloned()
        .ok_or_else(|| Error::Fixture {
            path: fx.name().into(),
            message: format!("no `sizes.{key}`"),
        })
}

/// Where the condition width lies in a model config file.
pub const COND_DIM: &str = "model.conditioning.cond_dim";

/// The `config` section of the conditioner of type `kind` (`t5`, ...) in a model config
/// (`model.conditioning.configs[i]`), as that conditioner's config type.
pub fn conditioner_section<T: serde::de::DeserializeOwned>(
    config: &Value,
    kind: &str,
) -> Result<T> {
    let configs = config
        .pointer("/model/conditioning/configs")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::config("model.conditioning.configs", "missing"))?;
    let i = configs
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .ok_or_else(|| {
            Error::config(
                "model.conditioning.configs",
                format!("no `{kind}` conditioner"),
            )
        })?;
    audiox_core::config::section(config, &format!("model.conditioning.configs.{i}.config"))
}

/// The video conditioner of a fixture, sized from its config section, JSON and weights.
pub fn video_conditioner(fx: &Fixture, device: &Device) -> Result<VideoConditioner> {
    let clip = ClipVisionConfig::from_hf_json(&sizes(fx, "clip")?)?;
    let pos = shape_of(fx, &format!("{VIDEO_PREFIX}Temp_pos_embedding"))?;
    let proj = shape_of(fx, &format!("{VIDEO_PREFIX}proj.weight"))?;
    let proj_sync = shape_of(fx, &format!("{VIDEO_PREFIX}proj_sync.weight"))?;
    let mlp = shape_of(
        fx,
        &format!("{VIDEO_PREFIX}Temp_transformer.layers.0.1.fn.net.0.weight"),
    )?;
    let sa = sizes(fx, "sa")?;
    let get = |k: &str| {
        sa.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| Error::Fixture {
                path: fx.name().into(),
                message: format!("no `sizes.sa.{k}`"),
            })
    };
    let temporal = TemporalTransformerConfig::new(
        clip.hidden_size,
        get("depth")?,
        get("heads")?,
        get("dim_head")?,
        mlp[0],
    );
    let mut config = conditioner_section::<VideoConditionerConfig>(
        fx.config_json()?,
        VideoConditionerConfig::TYPE,
    )?
    .with_clip(clip);
    config.frame_count = Some(pos[1]);
    config.tokens = proj[0];
    config.sync_rows = proj_sync[1];
    config.temporal = temporal;
    let (video, _) = VideoConditioner::load(
        &config,
        &[WeightSource::with_prefix(fx.weights(), VIDEO_PREFIX)],
        device,
    )?;
    Ok(video)
}

/// The audio-prompt conditioner's config of a fixture: its section (VAE, ratio range) with the
/// config's condition width, the prompt length of `in.audio` and the latent frames and tokens
/// of the `proj_features_128` weight.
pub fn audio_config(fx: &Fixture) -> Result<AudioPromptConfig> {
    let mut config: AudioPromptConfig =
        conditioner_section(fx.config_json()?, AudioPromptConfig::TYPE)?;
    config.validate("model.conditioning.configs[audio_autoencoder].config")?;
    let proj = shape_of(fx, &format!("{AUDIO_PREFIX}proj_features_128.weight"))?;
    config.samples = fx.f32("in.audio")?.shape[2];
    config.latent_frames = proj[1];
    config.tokens = proj[0];
    config.cond_dim = fx.config_section(COND_DIM)?;
    Ok(config)
}

/// The audio-prompt conditioner of a fixture, sized by [`audio_config`].
pub fn audio_conditioner(fx: &Fixture, device: &Device) -> Result<AudioPromptConditioner> {
    let config = audio_config(fx)?;
    let (audio, _) = AudioPromptConditioner::load(
        &config,
        &[WeightSource::with_prefix(fx.weights(), AUDIO_PREFIX)],
        device,
    )?;
    Ok(audio)
}

/// The fixture's recorded draws, in the reference's order.
fn replay(fx: &Fixture) -> Result<ReplayNoise> {
    let ratio = fx.f32("rng.audio_mask_ratio")?;
    let start = fx.i64("rng.audio_mask_start")?;
    let vae = fx.f32("rng.vae_noise")?;
    Ok(ReplayNoise::new()
        .with_uniform(labels::AUDIO_MASK_RATIO, &ratio.shape, ratio.values)
        .with_integers(labels::AUDIO_MASK_START, start.values)
        .with_normal(labels::VAE_NOISE, &vae.shape, vae.values))
}

/// Fixture `conditioner`: the video, text and audio streams and masks with every
/// intermediate (`mid.video.*`, `mid.text.*`, `mid.audio.*`), replaying the recorded draws.
///
/// The video stream is checked twice: the intermediates and `out.video_tokens` from the
/// reference's computation on every item, and `out.video_tokens (skipping empty items)` from
/// [`VideoConditioner::forward`], which does not run CLIP for items without video.
pub fn check_conditioner(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let mut checks = Vec::new();

    // Video.
    let video = video_conditioner(fx, device)?;
    let frames = input::<5>(fx, "in.video", device)?;
    let sync = input::<3>(fx, "in.sync", device)?;
    let trace = video.forward_trace(frames.clone(), sync.clone())?;
    checks.push(compare(fx, "mid.video.clip_last_hidden", trace.clip)?);
    checks.push(compare(fx, "mid.video.temporal", trace.temporal)?);
    checks.push(compare(fx, "mid.video.proj", trace.proj)?);
    checks.push(compare(fx, "mid.video.proj_sync", trace.proj_sync)?);
    checks.extend(compare_condition(fx, "video", &trace.condition, false)?);
    let skipping = video.forward(frames, sync)?;
    let mut check = compare(fx, "out.video_tokens", skipping.tokens)?;
    check.name = "out.video_tokens (skipping empty items)".into();
    checks.push(check);

    // Text.
    let t5_config = T5Config::from_hf_json(&sizes(fx, "t5")?)?;
    let t5 = load_t5(fx, &t5_config, TEXT_PREFIX, device)?;
    let ids = int_input(fx, "in.text_ids", device)?;
    let mask = mask_input(fx, "in.text_mask", device)?;
    let hidden = t5.forward(ids, mask.clone())?;
    checks.push(compare(fx, "mid.text.t5_last_hidden", hidden.clone())?);
    // What `TextConditioner::forward_tokens` emits.
    let text = Condition {
        tokens: crate::t5::mask_padding(hidden, mask.clone()),
        mask,
    };
    checks.extend(compare_condition(fx, "text", &text, true)?);

    // Audio (replaying the recorded mask ratio, mask start and VAE noise).
    let audio = audio_conditioner(fx, device)?;
    let mut noise = replay(fx)?;
    let trace = audio.forward_trace(
        input::<3>(fx, "in.audio", device)?,
        &PromptMask::Random,
        &mut noise,
    )?;
    noise.finish()?;
    checks.push(compare(fx, "mid.audio.masked_audio", trace.masked_audio)?);
    checks.push(compare(fx, "mid.audio.pre_bottleneck", trace.moments)?);
    checks.push(compare(fx, "mid.audio.latent", trace.latent)?);
    checks.push(compare(
        fx,
        "mid.audio.proj_features_128",
        trace.proj_features,
    )?);
    checks.extend(compare_condition(fx, "audio", &trace.condition, false)?);
    Ok(checks)
}

/// Requests of the bundle (`bundle/expected/<request>`) whose condition streams
/// [`check_bundle_conditioners`] compares.
pub const BUNDLE_REQUESTS: [&str; 4] = ["text_only", "text_audio", "text_video", "teacher_text"];

/// A bundle request's condition streams, from the bundle folder loaded the official way: the
/// tokenizer and T5 from `t5-base/`, the video conditioner from `clip-vit-base-patch32/`'s
/// config and the student checkpoint (whose CLIP copy overrides the folder's weights), the
/// audio conditioner from `pretransform/vae.ckpt` overridden by the student's copy. Inputs as
/// the official README builds them: the prompt text, the exact CLIP frames
/// (`mid.clip_frames`) and sync features of a video request or zeros, and the loaded audio
/// prompt (`mid.audio_prompt`); the audio draws are replayed.
///
/// The conditioners' configs come from the bundle's model config (composed by the `audiox`
/// crate's `ModelConfig`, which applies the small model's sizes); the T5 and CLIP sizes are
/// read from their folders here.
///
/// Compares the token ids and mask, and every `mid.text.*`, `mid.video.*`, `mid.audio.*` and
/// `out.{video,text,audio}_{tokens,mask}` of the request.
pub fn check_bundle_conditioners(
    set: &audiox_core::fixtures::FixtureSet,
    request: &str,
    configs: (
        &T5ConditionerConfig,
        &VideoConditionerConfig,
        &AudioPromptConfig,
    ),
    device: &Device,
) -> Result<Vec<Check>> {
    use crate::conditioners::TextConditioner;
    use audiox_core::weights::StateDict;

    let (text_config, video_config, audio_config) = configs;
    let bundle = set.bundle_dir();
    let fx = Fixture::open(&bundle.join("expected"), request)?;
    let student = StateDict::open(bundle.join("audiox_turbo").join("audiox_turbo.ckpt"))?;
    let vae = StateDict::open(bundle.join("pretransform").join("vae.ckpt"))?;
    let mut checks = Vec::new();

    // Text, from the prompt string.
    let t5_dir = bundle.join("t5-base");
    let t5 = StateDict::open(crate::hf_weights_file(&t5_dir, "T5")?)?;
    let (text, _) = TextConditioner::load(
        &text_config.clone().with_hf_dir(&t5_dir)?,
        &[WeightSource::new(&t5)],
        device,
    )?;
    let prompt = fx
        .field("request")?
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Fixture {
            path: fx.name().into(),
            message: "no request.text".into(),
        })?
        .to_string();
    let tokens = text.tokenizer.encode(&prompt)?;
    let ids = tokens.ids_tensor(device);
    let mask = tokens.mask_tensor(device);
    checks.push(super::text::compare_exact(
        &fx,
        "out.input_ids",
        ids.clone().float(),
    )?);
    checks.push(super::text::compare_exact(
        &fx,
        "out.attention_mask",
        mask.clone(),
    )?);
    let hidden = text.encoder.forward(ids.clone(), mask.clone())?;
    checks.push(compare(&fx, "mid.text.t5_last_hidden", hidden)?);
    let condition = text.forward_tokens(ids, mask)?;
    checks.extend(compare_condition(&fx, "text", &condition, true)?);

    // Video: the exact frames of a video request, zeros otherwise.
    let clip_dir = bundle.join("clip-vit-base-patch32");
    let clip = ClipVisionConfig::from_hf_file(clip_dir.join("config.json"))?;
    let clip_weights = VideoConditioner::clip_weights(&clip_dir)?;
    let mut sources: Vec<WeightSource<'_>> = clip_weights.iter().map(WeightSource::new).collect();
    sources.push(WeightSource::with_prefix(&student, VIDEO_PREFIX));
    let (video, _) =
        VideoConditioner::load(&video_config.clone().with_clip(clip), &sources, device)?;
    let size = video.visual_encoder_model.image_size();
    let d = video.visual_encoder_model.hidden_size();
    let rows = video.proj_sync.weight.dims()[0];
    let (frames, sync) = if fx.has("mid.clip_frames") {
        let f = fx.i64("mid.clip_frames")?;
        let values: Vec<f32> = f.values.iter().map(|&v| v as f32).collect();
        let mut shape = vec![1];
        shape.extend(&f.shape);
        (
            audiox_core::tensor::from_dyn::<5>(values, &shape, device)?,
            input::<3>(&fx, "out.sync_features", device)?,
        )
    } else {
        (
            burn::tensor::Tensor::zeros([1, video.frames(), 3, size, size], device),
            burn::tensor::Tensor::zeros([1, rows, d], device),
        )
    };
    let trace = video.forward_trace(frames.clone(), sync.clone())?;
    checks.push(compare(&fx, "mid.video.clip_last_hidden", trace.clip)?);
    checks.push(compare(&fx, "mid.video.temporal", trace.temporal)?);
    checks.push(compare(&fx, "mid.video.proj", trace.proj)?);
    checks.push(compare(&fx, "mid.video.proj_sync", trace.proj_sync)?);
    checks.extend(compare_condition(&fx, "video", &trace.condition, false)?);
    let mut check = compare(&fx, "out.video_tokens", video.forward(frames, sync)?.tokens)?;
    check.name = "out.video_tokens (skipping empty items)".into();
    checks.push(check);

    // Audio prompt, replaying the conditioner's draws.
    let vae = AudioPromptConditioner::vae_weights(&vae);
    let (audio, _) = AudioPromptConditioner::load(
        audio_config,
        &[
            WeightSource::new(&vae),
            WeightSource::with_prefix(&student, AUDIO_PREFIX),
        ],
        device,
    )?;
    let prompt = input::<2>(&fx, "mid.audio_prompt", device)?.unsqueeze::<3>();
    let mut noise = replay(&fx)?;
    let trace = audio.forward_trace(prompt, &PromptMask::Random, &mut noise)?;
    noise.finish()?;
    checks.push(compare(&fx, "mid.audio.masked_audio", trace.masked_audio)?);
    checks.push(compare(&fx, "mid.audio.pre_bottleneck", trace.moments)?);
    checks.push(compare(&fx, "mid.audio.latent", trace.latent)?);
    checks.push(compare(
        &fx,
        "mid.audio.proj_features_128",
        trace.proj_features,
    )?);
    checks.extend(compare_condition(&fx, "audio", &trace.condition, false)?);
    Ok(checks)
}
