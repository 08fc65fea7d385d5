//! The parity harness: every fixture of a golden fixture set, run through the matching Rust
//! component and compared with the reference (see `examples/parity.rs`, which prints one line
//! per fixture, and `tests/parity.rs`, which runs the same checks under `cargo test`).

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};

use audiox_core::audio::Audio;
use audiox_core::fixtures::{Check, Criterion, Fixture, FixtureSet};
use audiox_core::noise::{NoiseSource, ReplayNoise, labels};
use audiox_core::tensor::{from_dyn, to_vec};
use audiox_core::weights::{Component, StateDict, WeightSource, resolve_official_keys};
use audiox_core::{Error, Result};
use audiox_encoders::frames::VideoFrames;
use audiox_mmdit::MmditDenoiser;
use audiox_vae::OobleckDecoder;

use crate::config::ModelConfig;
use crate::{AudioPrompt, AudioX, Request};

/// The outcome of one fixture (or one bundle request).
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every compared tensor is within tolerance.
    Pass {
        /// Number of tensors compared.
        compared: usize,
        /// The check with the largest error in units of what its criterion allows
        /// ([`Check::error_ratio`]: `max_abs_err / atol` for f32), for reporting margins.
        closest: Check,
    },
    /// At least one tensor is out of tolerance; the worst one.
    Fail {
        /// The check with the largest excess over its tolerance.
        worst: Check,
        /// Number of failing tensors.
        failed: usize,
        /// Number of tensors compared.
        compared: usize,
    },
    /// The component is not implemented yet.
    NotImplemented,
    /// Running the component returned an error.
    Error(String),
}

impl Outcome {
    /// The outcome of `checks`, each decided by `criterion` ([`Check::judged`]).
    pub fn from_checks(checks: Vec<Check>, criterion: Criterion) -> Self {
        let checks: Vec<Check> = checks.into_iter().map(|c| c.judged(criterion)).collect();
        let by_excess = |a: &&Check, b: &&Check| a.worst_excess.total_cmp(&b.worst_excess);
        let Some(closest) = checks
            .iter()
            .max_by(|a, b| a.error_ratio().total_cmp(&b.error_ratio()))
        else {
            return Outcome::Error("no tensor was compared".into());
        };
        let compared = checks.len();
        let failed = checks.iter().filter(|c| !c.pass).count();
        if failed == 0 {
            Outcome::Pass {
                compared,
                closest: closest.clone(),
            }
        } else {
            // The failing check with the largest excess (a shape error counts as infinite).
            let worst = checks
                .iter()
                .filter(|c| !c.pass)
                .max_by(by_excess)
                .unwrap_or(closest)
                .clone();
            Outcome::Fail {
                worst,
                failed,
                compared,
            }
        }
    }

    /// Whether this counts as a failure for the harness's exit code.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Fail { .. } | Outcome::Error(_))
    }
}

type Checker = fn(&Fixture, &Device) -> Result<Vec<Check>>;

/// The tensor fixtures this crate knows how to run, by name.
fn tensor_checkers() -> BTreeMap<&'static str, Checker> {
    let mut m: BTreeMap<&'static str, Checker> = BTreeMap::new();
    m.insert("vae_decoder", audiox_vae::parity::check_vae_decoder);
    m.insert("vae_encoder", audiox_vae::parity::check_vae_encoder);
    m.insert("maf_block", audiox_mmdit::parity::check_maf_block);
    m.insert("mmdit_forward", audiox_mmdit::parity::check_mmdit_forward);
    m.insert(
        "t5_encoder",
        audiox_encoders::parity::text::check_t5_encoder,
    );
    m.insert(
        "clip_vision",
        audiox_encoders::parity::vision::check_clip_vision,
    );
    m.insert("conditioner", check_conditioner);
    m.insert("dmd_sampling", check_dmd_sampling);
    m.insert("teacher_rf_cfg", check_teacher_rf_cfg);
    m.insert(
        "synchformer",
        audiox_encoders::parity::synchformer::check_synchformer,
    );
    m.insert(
        "video_frames",
        audiox_encoders::parity::frames::check_video_frames,
    );
    m
}

fn tensor3(fx: &Fixture, name: &str, device: &Device) -> Result<Tensor<3>> {
    let t = fx.f32(name)?;
    from_dyn::<3>(t.values, &t.shape, device)
}

fn check3(fx: &Fixture, name: &str, t: &Tensor<3>) -> Result<Check> {
    fx.check(name, &t.dims(), &to_vec(t.clone()))
}

/// `conditioner`: the three conditioners (from `audiox-encoders`), then the MAF on their
/// outputs for `out.cross_attn_cond`.
fn check_conditioner(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let mut checks = audiox_encoders::parity::conditioner::check_conditioner(fx, device)?;
    let maf = audiox_mmdit::parity::load_fixture_maf(fx, device)?;
    let context = maf.forward(
        tensor3(fx, "out.text_tokens", device)?,
        tensor3(fx, "out.video_tokens", device)?,
        tensor3(fx, "out.audio_tokens", device)?,
    )?;
    checks.push(check3(fx, "out.cross_attn_cond", &context)?);
    Ok(checks)
}

/// The fused context of a sampling fixture, with its check.
fn fixture_context(fx: &Fixture, device: &Device, checks: &mut Vec<Check>) -> Result<Tensor<3>> {
    let maf = audiox_mmdit::parity::load_fixture_maf(fx, device)?;
    let context = maf.forward(
        tensor3(fx, "in.text_tokens", device)?,
        tensor3(fx, "in.video_tokens", device)?,
        tensor3(fx, "in.audio_tokens", device)?,
    )?;
    checks.push(check3(fx, "mid.cross_attn_cond", &context)?);
    Ok(context)
}

/// Decodes the fixture's latent with its `pretransform.model.decoder.*` weights.
fn fixture_decode(fx: &Fixture, latent: Tensor<3>, device: &Device) -> Result<Tensor<3>> {
    let config = ModelConfig::from_json_value(fx.config_json()?)?;
    let (decoder, _) = OobleckDecoder::load(
        &config.vae().decoder,
        &[WeightSource::with_prefix(
            fx.weights(),
            "pretransform.model.decoder.",
        )],
        device,
    )?;
    Ok(decoder.forward(latent))
}

/// `dmd_sampling`: MAF, the DiT as denoiser of the 4-step DMD sampler (replaying the recorded
/// re-noise draws), the VAE decoder.
fn check_dmd_sampling(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let context = fixture_context(fx, device, &mut checks)?;
    let dit = audiox_mmdit::parity::load_fixture_dit(fx, device)?;
    let denoiser = MmditDenoiser::new(&dit, context)?;
    checks.extend(audiox_sampler::parity::check_dmd_sampling_with(
        fx, device, &denoiser,
    )?);
    let latent = tensor3(fx, "out.latent", device)?;
    checks.push(check3(
        fx,
        "out.audio",
        &fixture_decode(fx, latent, device)?,
    )?);
    Ok(checks)
}

/// `teacher_rf_cfg`: MAF, the DiT with its all-zero unconditional branch under the guided
/// Euler sampler, the VAE decoder.
fn check_teacher_rf_cfg(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let context = fixture_context(fx, device, &mut checks)?;
    let dit = audiox_mmdit::parity::load_fixture_dit(fx, device)?;
    let denoiser = MmditDenoiser::with_guidance(&dit, context)?;
    checks.extend(audiox_sampler::parity::check_teacher_rf_cfg_with(
        fx, device, &denoiser,
    )?);
    let latent = tensor3(fx, "out.latent", device)?;
    checks.push(check3(
        fx,
        "out.audio",
        &fixture_decode(fx, latent, device)?,
    )?);
    Ok(checks)
}

/// Runs one entry of the set's index on `device`, its tensors decided by `criterion`
/// ([`Criterion::Half`] for a device computing in f16 or bf16). Bundle requests are reported by
/// [`run_bundle`]. `ckpt_formats` computes nothing on the device (container decoding on the
/// host) and keeps its own rule.
pub fn run_fixture(set: &FixtureSet, name: &str, device: &Device, criterion: Criterion) -> Outcome {
    if name == "ckpt_formats" {
        return match check_ckpt_formats(set) {
            Ok(checks) => Outcome::from_checks(checks, Criterion::Tolerance),
            Err(e) => Outcome::Error(e.to_string()),
        };
    }
    let Some(checker) = tensor_checkers().get(name).copied() else {
        return Outcome::NotImplemented;
    };
    match set.fixture(name).and_then(|fx| checker(&fx, device)) {
        Ok(checks) => Outcome::from_checks(checks, criterion),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// The bundle's requests (`bundle/<request>`), each with its outcome: the bundle folder is
/// loaded through the public builder, each request is run through [`AudioX::generate`] with
/// its recorded random draws injected through a [`ReplayNoise`], and every recorded output is
/// compared (tokens, condition streams, fused context, Synchformer features, latent, decoded
/// and post-processed audio), each decided by `criterion` (see [`run_fixture`]).
pub fn run_bundle(
    set: &FixtureSet,
    device: &Device,
    criterion: Criterion,
) -> Vec<(String, Outcome)> {
    let Some(requests) = set
        .entry("bundle")
        .and_then(|b| b.get("requests"))
        .and_then(|r| r.as_object())
    else {
        return Vec::new();
    };
    let model = AudioX::builder()
        .checkpoint_dir(set.bundle_dir())
        .device(device.clone())
        .build();
    requests
        .keys()
        .map(|r| {
            let outcome = match &model {
                Err(e) => Outcome::Error(format!("loading the bundle: {e}")),
                Ok(model) => match check_bundle_request(set, r, model) {
                    Ok(checks) => Outcome::from_checks(checks, criterion),
                    Err(e) => Outcome::Error(e.to_string()),
                },
            };
            (format!("bundle/{r}"), outcome)
        })
        .collect()
}

/// One bundle request (see [`run_bundle`]).
pub fn check_bundle_request(set: &FixtureSet, name: &str, model: &AudioX) -> Result<Vec<Check>> {
    let fx = Fixture::open(&set.bundle_dir().join("expected"), name)?;
    let device = model.device().clone();
    let spec = fx.field("request")?.clone();
    let bad = |m: &str| Error::Fixture {
        path: set
            .bundle_dir()
            .join("expected")
            .join(format!("{name}.json")),
        message: m.to_string(),
    };
    let text = spec["text"].as_str().ok_or_else(|| bad("request.text"))?;
    let steps = spec["steps"].as_u64().ok_or_else(|| bad("request.steps"))? as usize;
    let cfg = spec["cfg_scale"].as_f64().unwrap_or(1.0) as f32;
    let teacher = spec["sampler"].as_str().unwrap_or("").contains("Euler");
    let mut request = Request::text(text).steps(steps).keep_intermediates(true);
    if teacher {
        request = request
            .sampler(audiox_sampler::SamplerKind::Euler)
            .guidance(cfg);
    }
    if let Some(audio) = spec.get("audio").filter(|a| !a.is_null()) {
        let rate = audio["source_sample_rate"]
            .as_u64()
            .ok_or_else(|| bad("request.audio.source_sample_rate"))? as u32;
        let source = fx.f32("in.audio_source")?;
        let frames = source.shape[1];
        let channels = source.values.chunks(frames).map(<[f32]>::to_vec).collect();
        let mut prompt = AudioPrompt::new(Audio::new(rate, channels)?);
        prompt.start_seconds = audio["seconds_start"].as_f64().unwrap_or(0.0);
        request = request.audio_prompt(prompt);
    }
    if let Some(video) = spec.get("video").filter(|v| !v.is_null()) {
        let fps = video["declared_fps"]
            .as_f64()
            .ok_or_else(|| bad("request.video.declared_fps"))?;
        let source = fx.i64("in.video_source")?;
        let shape: [usize; 4] = source
            .shape
            .clone()
            .try_into()
            .map_err(|_| bad("in.video_source rank"))?;
        let pixels = source.values.iter().map(|&v| v as u8).collect();
        request = request.video_frames(VideoFrames::new(pixels, shape, fps)?);
    }
    // The recorded draws, in the reference's order.
    let mut noise = ReplayNoise::new();
    let initial = fx.f32("rng.initial_noise")?;
    noise = noise.with_normal(labels::INITIAL_NOISE, &initial.shape, initial.values);
    noise = noise.with_uniform(
        labels::AUDIO_MASK_RATIO,
        &fx.f32("rng.audio_mask_ratio")?.shape,
        fx.f32("rng.audio_mask_ratio")?.values,
    );
    noise = noise.with_integers(
        labels::AUDIO_MASK_START,
        fx.i64("rng.audio_mask_start")?.values,
    );
    let vae = fx.f32("rng.vae_noise")?;
    noise = noise.with_normal(labels::VAE_NOISE, &vae.shape, vae.values);
    if fx.has("rng.step_noise") {
        let steps = fx.f32("rng.step_noise")?;
        let per = steps.values.len() / steps.shape[0];
        for chunk in steps.values.chunks(per) {
            noise = noise.with_normal(labels::STEP_NOISE, &steps.shape[1..], chunk.to_vec());
        }
    }
    let replay = std::sync::Arc::new(std::sync::Mutex::new(noise));
    let out = model.generate(request.noise_source(SharedNoise(replay.clone())))?;
    replay.lock().map_err(|_| bad("noise lock"))?.finish()?;
    let mid = out.intermediates.ok_or_else(|| bad("no intermediates"))?;

    let mut checks = Vec::new();
    let ids: Vec<f32> = mid.tokens.ids.iter().map(|&v| v as f32).collect();
    let mask: Vec<f32> = mid.tokens.mask.iter().map(|&v| v as u8 as f32).collect();
    let [b, n] = [mid.tokens.batch, mid.tokens.max_length];
    checks.push(compare_ints(&fx, "out.input_ids", &[b, n], &ids)?);
    checks.push(compare_ints(&fx, "out.attention_mask", &[b, n], &mask)?);
    for (key, t) in [
        ("out.video_tokens", &mid.video_tokens),
        ("out.text_tokens", &mid.text_tokens),
        ("out.audio_tokens", &mid.audio_tokens),
        ("out.cross_attn_cond", &mid.context),
        ("out.latent", &mid.latent),
        ("out.audio", &mid.decoded),
    ] {
        checks.push(check3(&fx, key, t)?);
    }
    if fx.has("out.sync_features") {
        checks.push(check3(&fx, "out.sync_features", &mid.sync_features)?);
    }
    let clip = &out.audio[0];
    let final_values: Vec<f32> = clip.channels().iter().flatten().copied().collect();
    checks.push(fx.check(
        "out.audio_final",
        &[clip.num_channels(), clip.num_frames()],
        &final_values,
    )?);
    let _ = device;
    Ok(checks)
}

/// Integer outputs must match exactly.
fn compare_ints(fx: &Fixture, name: &str, shape: &[usize], got: &[f32]) -> Result<Check> {
    let want = fx.i64(name)?;
    let want_f: Vec<f32> = want.values.iter().map(|&v| v as f32).collect();
    Ok(Check::compare(
        name,
        &want.shape,
        &want_f,
        shape,
        got,
        0.0,
        0.0,
    ))
}

/// A [`ReplayNoise`] shared with the caller, so that it can check every draw was used.
#[derive(Clone)]
struct SharedNoise(std::sync::Arc<std::sync::Mutex<ReplayNoise>>);

impl SharedNoise {
    fn with<T>(&self, f: impl FnOnce(&mut ReplayNoise) -> Result<T>) -> Result<T> {
        let mut guard = self.0.lock().map_err(|_| Error::NoiseReplay {
            message: "the replay source was poisoned".into(),
        })?;
        f(&mut guard)
    }
}

impl NoiseSource for SharedNoise {
    fn normal(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.with(|n| n.normal(label, shape))
    }
    fn uniform(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.with(|n| n.uniform(label, shape))
    }
    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>> {
        self.with(|n| n.integers(label, bounds))
    }
}

/// `ckpt_formats`: every tensor of every official container decodes to the recorded sums, and
/// the student files' keys resolve where the official loader puts them. Each file becomes one
/// check (pass/fail, error = worst relative sum difference).
pub fn check_ckpt_formats(set: &FixtureSet) -> Result<Vec<Check>> {
    let path = set.dir().join("ckpt_formats.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Fixture {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let bad = |m: &str| Error::Fixture {
        path: path.clone(),
        message: m.to_string(),
    };
    let files = meta["files"].as_object().ok_or_else(|| bad("no `files`"))?;
    let mut checks = Vec::new();
    for (file, info) in files {
        let dict = StateDict::open(set.dir().join(file))?;
        let tensors = info["tensors"]
            .as_object()
            .ok_or_else(|| bad("no `tensors`"))?;
        let mut worst = 0.0f64;
        let mut problems = Vec::new();
        if dict.len() != tensors.len() {
            problems.push(format!(
                "{} tensors stored, {} described",
                dict.len(),
                tensors.len()
            ));
        }
        for (name, t) in tensors {
            let Some(stored) = dict.get(name) else {
                problems.push(format!("`{name}` missing"));
                continue;
            };
            let shape: Vec<usize> =
                serde_json::from_value(t["shape"].clone()).map_err(|e| bad(&e.to_string()))?;
            if stored.shape() != shape.as_slice() {
                problems.push(format!("`{name}` shape {:?} != {shape:?}", stored.shape()));
            }
            let (_, values) = dict.read_f32(name)?;
            let sum: f64 = values.iter().map(|&x| x as f64).sum();
            let sum_sq: f64 = values.iter().map(|&x| (x as f64) * (x as f64)).sum();
            for (got, key) in [(sum, "sum"), (sum_sq, "sum_sq")] {
                let want = t[key].as_f64().ok_or_else(|| bad("no sum"))?;
                worst = worst.max((got - want).abs() / want.abs().max(1.0));
            }
        }
        // Official key rule on the student layout.
        let targets: BTreeMap<String, Vec<usize>> = tensors
            .values()
            .filter_map(|t| {
                let target = t.get("loads_into")?.as_str()?;
                Some((
                    target.to_string(),
                    serde_json::from_value(t["shape"].clone()).ok()?,
                ))
            })
            .collect();
        if !targets.is_empty() {
            let (resolved, dropped) = resolve_official_keys(&dict, &targets);
            for (stored, t) in tensors {
                let problem = match t.get("loads_into").and_then(|v| v.as_str()) {
                    Some(target) => (resolved.read_f32(target)?.1 != dict.read_f32(stored)?.1)
                        .then(|| format!("`{stored}` did not load into `{target}`")),
                    None => {
                        (!dropped.contains(stored)).then(|| format!("`{stored}` was not dropped"))
                    }
                };
                problems.extend(problem);
            }
        }
        let pass = problems.is_empty() && worst <= 1e-7;
        checks.push(Check {
            name: file.clone(),
            pass,
            max_abs_err: worst,
            worst_excess: if pass { -1.0 } else { worst.max(1.0) },
            atol: 1e-7,
            rtol: 0.0,
            shape_error: (!problems.is_empty()).then(|| problems.join("; ")),
            // The error is relative to each sum already.
            ref_peak: 1.0,
            criterion: Criterion::Tolerance,
        });
    }
    Ok(checks)
}
