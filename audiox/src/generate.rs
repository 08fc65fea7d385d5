//! One request, end to end: noise, conditioners, fusion, sampling, decoding, post-processing.

use std::time::{Duration, Instant};

use burn::tensor::Tensor;

use audiox_core::audio::Audio;
use audiox_core::noise::{CheckedNoise, NoiseSource, SeededNoise, labels};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_core::{Error, Result};
use audiox_encoders::conditioners::{Condition, PromptMask};
use audiox_encoders::frames::{FrameSampling, SampledFrames};
use audiox_encoders::tokenizer::Tokens;
use audiox_mmdit::MmditDenoiser;
use audiox_sampler::{CancelToken, Defaults, Guidance, Sampler, SamplerKind, StepControl};

use crate::model::{AudioX, Components, DenoiserKind};
use crate::request::{AudioPrompt, AudioPromptMask, Request, SamplerChoice, VideoInput};

/// Wall time of each stage of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTimings {
    /// Video frame selection/resizing, CLIP, the temporal transformer and Synchformer
    /// (near zero without video: the learned empty feature is used).
    pub video: Duration,
    /// Tokenizer and T5 (also the negative prompt's).
    pub text: Duration,
    /// Audio-prompt preparation and its VAE encoder (cached for requests without a prompt).
    pub audio_prompt: Duration,
    /// The MAF fusion block.
    pub fusion: Duration,
    /// Preparing the DiT conditioning and running the sampler.
    pub sampling: Duration,
    /// VAE decoding.
    pub decode: Duration,
    /// Trimming and normalisation.
    pub post: Duration,
    /// The whole request.
    pub total: Duration,
}

impl std::fmt::Display for StageTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |d: Duration| d.as_secs_f64();
        write!(
            f,
            "video {:.2} s, text {:.2} s, audio prompt {:.2} s, fusion {:.2} s, sampling {:.2} s, \
             decode {:.2} s, post {:.2} s, total {:.2} s",
            s(self.video),
            s(self.text),
            s(self.audio_prompt),
            s(self.fusion),
            s(self.sampling),
            s(self.decode),
            s(self.post),
            s(self.total)
        )
    }
}

/// Intermediate tensors of a request (kept with [`Request::keep_intermediates`]).
#[derive(Debug, Clone)]
pub struct Intermediates {
    /// The tokenizer output of the prompt.
    pub tokens: Tokens,
    /// Video condition tokens `[B, Nv, D]`.
    pub video_tokens: Tensor<3>,
    /// Synchformer features `[B, R, D]` (zeros without video).
    pub sync_features: Tensor<3>,
    /// Text condition tokens `[B, Nt, D]`.
    pub text_tokens: Tensor<3>,
    /// Audio-prompt condition tokens `[B, Na, D]`.
    pub audio_tokens: Tensor<3>,
    /// The fused context `[B, Nctx, D]` (order text, video, audio).
    pub context: Tensor<3>,
    /// The sampled latent `[B, C, L]`.
    pub latent: Tensor<3>,
    /// The decoded audio before trimming and normalisation `[B, channels, L * ratio]`.
    pub decoded: Tensor<3>,
}

/// The result of a request.
#[derive(Debug, Clone)]
pub struct Generation {
    /// One clip per sample, at the model's rate, trimmed to the requested duration and
    /// (unless turned off) peak-normalised; then the request's output options applied
    /// ([`Request::output`]: rate, channels, silence, fade, loudness instead of the peak).
    pub audio: Vec<Audio>,
    /// The seed of the request's generator (`None` when a custom noise source was given).
    pub seed: Option<u64>,
    /// The sampler that ran.
    pub sampler: String,
    /// Time spent per stage.
    pub timings: StageTimings,
    /// Intermediate tensors, when asked for.
    pub intermediates: Option<Intermediates>,
}

impl AudioX {
    /// Generates audio for `request`.
    pub fn generate(&self, request: Request) -> Result<Generation> {
        self.generate_with(request, &mut StepControl::new())
    }

    /// Generates audio for `request`, reporting sampler progress to and checking cancellation
    /// through `control`.
    ///
    /// The cancellation token is checked at every stage boundary (before the first draw,
    /// after the video, the text, the negative prompt and the audio prompt conditioning, before
    /// the DiT preparation, between sampler steps, before the decode and each of its chunks,
    /// and last before returning): a cancelled request returns [`Error::Cancelled`] and no
    /// audio, also when the cancel comes after the last step. `completed_steps` is 0 when it
    /// stopped before sampling and the sampler's step count after it.
    pub fn generate_with(
        &self,
        request: Request,
        control: &mut StepControl<'_>,
    ) -> Result<Generation> {
        self.generate_sampled(request, control, None)
    }

    /// [`AudioX::generate_with`] with the CLIP and Synchformer frames of a video file request
    /// already read (`frames`, for the samplings the request's video start gives): the
    /// long-form stream decodes a file once for all its windows.
    pub(crate) fn generate_sampled(
        &self,
        mut request: Request,
        control: &mut StepControl<'_>,
        frames: Option<[SampledFrames; 2]>,
    ) -> Result<Generation> {
        // Limits first: nothing below is sized by a request value before they are checked.
        let max_seconds = self.inner.config.conditioning_seconds as f64;
        crate::limits::check_request(&self.inner.limits, &request, max_seconds)?;
        // Long-form: a duration past the model's window goes through windowed continuation.
        if request
            .duration
            .is_some_and(|d| d > self.inner.config.conditioning_seconds as f64)
        {
            return crate::long_form::generate_routed(self, request, control);
        }

        let total = Instant::now();
        let m = &*self.inner;
        let plan = Plan::new(m, &request)?;
        let mut timings = StageTimings::default();
        // Cancellation at a stage boundary, `done` sampler steps in.
        let steps = plan.sampler.steps();
        let stop = |control: &StepControl<'_>, done: usize| control.check_cancelled(done, steps);
        stop(control, 0)?;

        let (noise, seed): (Box<dyn NoiseSource>, Option<u64>) = match request.noise.take() {
            Some(n) => (n, None),
            None => {
                let seed = request.seed.unwrap_or_else(random_seed);
                (Box::new(SeededNoise::new(seed)), Some(seed))
            }
        };
        // Every draw is checked before it reaches a tensor or an index (a caller's source may
        // hand out anything).
        let mut noise = CheckedNoise::new(noise);
        let device = &m.device;
        let b = request.num_samples;

        // 1. The initial latent noise, drawn before the conditioners (reference order).
        let shape = [b, m.dit.io_channels(), m.dit.latent_length()];
        let initial = from_vec(noise.normal(labels::INITIAL_NOISE, &shape)?, shape, device)?;

        // 2. Conditioners, in the config order video, text, audio.
        let t = Instant::now();
        let cancel = control.cancel_token().cloned();
        let (video, sync) = video_condition(m, &request, b, frames, cancel, &|| stop(control, 0))?;
        timings.video = t.elapsed();
        stop(control, 0)?;

        let t = Instant::now();
        let (text, tokens) = text_condition(m, &request.prompt, b)?;
        stop(control, 0)?;
        let negative = match &request.negative_prompt {
            Some(neg) => Some(text_condition(m, neg, b)?.0),
            None => None,
        };
        timings.text = t.elapsed();
        stop(control, 0)?;

        let t = Instant::now();
        let audio = audio_condition(m, request.audio_prompt.as_ref(), b, &mut noise)?;
        timings.audio_prompt = t.elapsed();
        stop(control, 0)?;

        // 3. Fusion. upstream: the block takes (text, video, audio) in its (video, text, audio)
        // slots; `MafBlock::forward` reproduces that and returns the context text, video, audio.
        let t = Instant::now();
        let context = m.maf.forward(
            text.tokens.clone(),
            video.tokens.clone(),
            audio.tokens.clone(),
        )?;
        let negative_context = match negative {
            Some(neg) => Some(m.maf.forward(
                neg.tokens,
                video.tokens.clone(),
                audio.tokens.clone(),
            )?),
            None => None,
        };
        timings.fusion = t.elapsed();
        stop(control, 0)?;

        // 4. Sampling.
        let t = Instant::now();
        let denoiser = match (plan.sampler.guidance().is_active(), negative_context) {
            (false, _) => MmditDenoiser::new(&m.dit, context.clone())?,
            (true, None) => MmditDenoiser::with_guidance(&m.dit, context.clone())?,
            (true, Some(neg)) => MmditDenoiser::with_unconditional(&m.dit, context.clone(), neg)?,
        };
        let latent = plan
            .sampler
            .sample(&denoiser, initial, &mut noise, control)?;
        // The sampler may be the caller's: its result must fit the decoder.
        check_sampled(plan.sampler.name(), &shape, &latent)?;
        drop(denoiser);
        timings.sampling = t.elapsed();
        stop(control, steps)?;

        // 5. Decoding: only the latent frames the kept samples depend on (a request shorter
        // than the model's window, and the full model's 10 s of its 10.96 s window, trim the
        // rest away below); the whole latent where the intermediates are kept.
        let t = Instant::now();
        let frames = latent.dims()[2];
        let frames = if request.keep_intermediates {
            frames
        } else {
            m.decoder.frames_for_samples(plan.samples, frames)
        };
        let to_decode = latent.clone().narrow(2, 0, frames);
        let decoded = match m.chunked_decode {
            Some(chunking) => {
                m.decoder
                    .forward_chunked_with(to_decode, chunking, &mut |_, _| stop(control, steps))?
            }
            None => m.decoder.forward(to_decode),
        };
        timings.decode = t.elapsed();

        // 6. Trim and normalise, per sample.
        let t = Instant::now();
        let audio_out = postprocess(
            &decoded,
            plan.samples,
            m.config.sample_rate,
            request.normalize && !request.output.replaces_peak_normalisation(),
        )?;
        // Sound-effect output options (issue 18): rate, mono, trim, fade, loudness.
        let audio_out = if request.output == crate::postprocess::OutputOptions::default() {
            audio_out
        } else {
            audio_out
                .iter()
                .map(|a| request.output.apply(a))
                .collect::<Result<Vec<_>>>()?
        };
        timings.post = t.elapsed();
        timings.total = total.elapsed();
        // A cancel that came during the decode or the post-processing still means no audio.
        stop(control, steps)?;

        let intermediates = request.keep_intermediates.then(|| Intermediates {
            tokens,
            video_tokens: video.tokens,
            sync_features: sync,
            text_tokens: text.tokens,
            audio_tokens: audio.tokens,
            context,
            latent,
            decoded,
        });
        Ok(Generation {
            audio: audio_out,
            seed,
            sampler: plan.sampler.name().to_string(),
            timings,
            intermediates,
        })
    }
}

/// Everything decided from the request before any compute.
struct Plan {
    sampler: std::sync::Arc<dyn Sampler>,
    /// Output samples per clip.
    samples: usize,
}

impl Plan {
    fn new(m: &Components, r: &Request) -> Result<Self> {
        // Output options are checked before any compute (issue 18).
        r.output.validate()?;
        if r.num_samples == 0 {
            return Err(Error::InvalidRequest(
                "num_samples must be at least 1".into(),
            ));
        }
        let max = m.config.conditioning_seconds as f64;
        let duration = r.duration.unwrap_or(max);
        if !(duration > 0.0 && duration <= max) {
            return Err(Error::InvalidRequest(format!(
                "a duration of {duration} s is not supported: this model generates at most {max} s \
                 (it was trained on {max} s clips)"
            )));
        }
        let samples = ((duration * m.config.sample_rate as f64).round() as usize).max(1);
        if r.video.is_some() && m.synchformer.is_none() {
            return Err(Error::InvalidRequest(
                "video and image conditioning need the Synchformer weights \
                 (synchformer/synchformer_state_dict.pth); none were loaded"
                    .into(),
            ));
        }
        if let Some(VideoInput::File(_)) = &r.video
            && !cfg!(feature = "video")
        {
            return Err(Error::InvalidRequest(
                "video files need the `video` feature (ffmpeg); pass decoded frames instead".into(),
            ));
        }
        // Every default comes from `audiox_sampler::Defaults` (docs/samplers.md).
        let defaults = match m.kind {
            DenoiserKind::Student => Defaults::STUDENT,
            DenoiserKind::Teacher => Defaults::TEACHER,
        };
        let guidance = Guidance {
            scale: r.guidance.unwrap_or(defaults.guidance.scale),
            rescale_phi: r.cfg_rescale,
        };
        let sampler: std::sync::Arc<dyn Sampler> = match &r.sampler {
            SamplerChoice::Custom(s) => {
                let set = [
                    r.steps.map(|n| format!("steps {n}")),
                    r.guidance.map(|g| format!("guidance {g}")),
                    (r.cfg_rescale != 0.0).then(|| format!("cfg_rescale {}", r.cfg_rescale)),
                ];
                let set: Vec<String> = set.into_iter().flatten().collect();
                if !set.is_empty() {
                    return Err(Error::InvalidRequest(format!(
                        "the sampler object `{}` carries its own schedule and guidance; the \
                         request also sets {}: set them on the sampler instead",
                        s.name(),
                        set.join(", ")
                    )));
                }
                s.clone()
            }
            SamplerChoice::Builtin(kind) => {
                let steps = r.steps.unwrap_or(kind.default_steps());
                kind.build(steps, guidance).into()
            }
            SamplerChoice::Default => {
                if defaults.sampler == SamplerKind::Dmd && guidance.is_active() {
                    return Err(Error::InvalidRequest(
                        "the DMD student sampler does not use guidance; choose a guided \
                         sampler (euler, heun, dpmpp-2m) for a guidance scale"
                            .into(),
                    ));
                }
                let steps = r.steps.unwrap_or(defaults.steps);
                defaults.sampler.build(steps, guidance).into()
            }
        };
        sampler.validate()?;
        if r.negative_prompt.is_some() && !sampler.guidance().is_active() {
            return Err(Error::InvalidRequest(
                "a negative prompt is used as the unconditional branch of classifier-free \
                 guidance: set a guidance scale above 1 with a guided sampler"
                    .into(),
            ));
        }
        if let Some(p) = &r.audio_prompt {
            if !(p.start_seconds >= 0.0 && p.start_seconds.is_finite()) {
                return Err(Error::InvalidRequest(format!(
                    "audio prompt start {} s must be a non-negative number",
                    p.start_seconds
                )));
            }
            if let AudioPromptMask::Blank(span) = &p.mask
                && !(span.start >= 0.0 && span.end >= span.start && span.end.is_finite())
            {
                return Err(Error::InvalidRequest(format!(
                    "audio prompt blank span {span:?} is not a valid range"
                )));
            }
        }
        Ok(Plan { sampler, samples })
    }
}

/// The sampled latent must have the shape of the initial noise and be finite: a custom
/// sampler's result is checked here, before it reaches the decoder.
fn check_sampled(name: &str, shape: &[usize; 3], latent: &Tensor<3>) -> Result<()> {
    if latent.dims() != *shape {
        return Err(Error::input_shape(
            format!("latent returned by sampler `{name}`"),
            format!("{shape:?} (the initial noise's shape)"),
            &latent.dims(),
        ));
    }
    audiox_sampler::check_finite(&format!("sampler `{name}`"), latent)
}

pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Video tokens and Synchformer features for `b` samples; `stop` (the cancellation check) runs
/// after the frames are read and after Synchformer, and `cancel` is polled while ffmpeg decodes
/// a video file (a cancel kills it within milliseconds). `sampled`: a file's frames already
/// read for the request's samplings (nothing is decoded here then).
fn video_condition(
    m: &Components,
    r: &Request,
    b: usize,
    sampled: Option<[SampledFrames; 2]>,
    #[cfg_attr(not(feature = "video"), allow(unused_variables))] cancel: Option<CancelToken>,
    stop: &dyn Fn() -> Result<()>,
) -> Result<(Condition, Tensor<3>)> {
    let device = &m.device;
    let frames = m.video.frames();
    let clip_size = m.video.image_size();
    let rows = m.video.sync_rows();
    let width = m.text_width();
    let Some(input) = &r.video else {
        // No video: all-zero frames and sync features, as the reference feeds; the conditioner
        // returns its learned empty feature without running CLIP.
        let zeros = Tensor::<5>::zeros([b, frames, 3, clip_size, clip_size], device);
        let sync = Tensor::<3>::zeros([b, rows, width], device);
        return Ok((m.video.forward(zeros, sync.clone())?, sync));
    };
    let synchformer = m.synchformer.as_ref().expect("checked in Plan::new");
    let seconds = m.config.conditioning_seconds as f64;
    let clip_sampling = FrameSampling::new(m.config.video_fps as f64, seconds, clip_size)
        .with_seek(r.video_start_seconds);
    let sync_sampling = FrameSampling::new(
        synchformer.frame_rate() as f64,
        seconds,
        synchformer.image_size(),
    )
    .with_seek(r.video_start_seconds);
    let (clip, sync_frames, still): (SampledFrames, SampledFrames, bool) = match input {
        // Read by the caller for these samplings (a video file, decoded once per long-form
        // request).
        VideoInput::File(_) if sampled.is_some() => {
            let [c, s] = sampled.expect("matched as present");
            (c, s, false)
        }
        VideoInput::Frames(v) => {
            let [c, s] = v.sample_streams([clip_sampling, sync_sampling])?;
            (c, s, false)
        }
        VideoInput::Image(image) => (
            image.sample(&clip_sampling, r.image_scaling)?,
            image.sample(&sync_sampling, r.image_scaling)?,
            true,
        ),
        #[cfg(feature = "video")]
        VideoInput::File(path) => {
            let mut ffmpeg = audiox_encoders::video_file::Ffmpeg::new().with_limits(&m.limits);
            if let Some(token) = cancel {
                ffmpeg = ffmpeg.with_cancel(std::sync::Arc::new(move || token.is_cancelled()));
            }
            let [c, s] = ffmpeg.sample(path, [clip_sampling, sync_sampling])?;
            (c, s, false)
        }
        #[cfg(not(feature = "video"))]
        VideoInput::File(_) => unreachable!("refused in Plan::new"),
    };
    stop()?;
    let clip_frames: Tensor<5> = clip.to_tensor(device).unsqueeze_dim(0);
    let sync_input = sync_frames.sync_tensor(device);
    let sync = if still {
        // A still image gives identical segments: run one and repeat its rows (identical output).
        let segment = synchformer.segment();
        let one = synchformer.forward(sync_input.narrow(1, 0, segment))?;
        let segments = rows / one.dims()[1];
        one.repeat_dim(1, segments)
    } else {
        synchformer.forward(sync_input)?
    };
    stop()?;
    let [_, t, c, h, w] = clip_frames.dims();
    let clip_frames = clip_frames.expand([b, t, c, h, w]);
    let [_, r_rows, d] = sync.dims();
    let sync = sync.expand([b, r_rows, d]);
    Ok((m.video.forward(clip_frames, sync.clone())?, sync))
}

/// Text tokens for `b` samples of one prompt (T5 runs once, and not at all when the prompt is
/// among the last few the model conditioned on: `crate::text_cache`).
fn text_condition(m: &Components, prompt: &str, b: usize) -> Result<(Condition, Tokens)> {
    let (condition, tokens) = match m.text_cache.get(prompt) {
        Some(hit) => hit,
        None => {
            let (condition, tokens) = m.text.forward(&[prompt], &m.device)?;
            m.text_cache.put(prompt, &condition, &tokens);
            (condition, tokens)
        }
    };
    let [_, n, d] = condition.tokens.dims();
    let [_, nm] = condition.mask.dims();
    Ok((
        Condition {
            tokens: condition.tokens.expand([b, n, d]),
            mask: condition.mask.expand([b, nm]),
        },
        tokens,
    ))
}

/// Audio-prompt tokens for `b` samples (each draws its own mask and posterior noise).
fn audio_condition(
    m: &Components,
    prompt: Option<&AudioPrompt>,
    b: usize,
    noise: &mut dyn NoiseSource,
) -> Result<Condition> {
    let samples = m.audio.samples();
    let Some(p) = prompt else {
        return m
            .audio
            .forward_silent(b, &PromptMask::Random, noise, &m.device);
    };
    let rate = m.config.sample_rate;
    let window = p.audio.window_at_rate(rate, p.start_seconds, samples)?;
    let channels = window.num_channels();
    let values: Vec<f32> = window.channels().iter().flatten().copied().collect();
    let one = from_vec(values, [1, channels, samples], &m.device)?;
    let batch = one.expand([b, channels, samples]);
    let mask = match &p.mask {
        AudioPromptMask::Random => PromptMask::Random,
        AudioPromptMask::Keep => PromptMask::Keep,
        AudioPromptMask::Blank(span) => {
            let from = ((span.start * rate as f64) as usize).min(samples);
            let to = ((span.end * rate as f64) as usize).clamp(from, samples);
            PromptMask::Spans(vec![from..to; b])
        }
    };
    m.audio.forward(batch, &mask, noise)
}

/// `[B, C, N]` -> one [`Audio`] per sample: the first `samples` samples, peak-normalised over
/// both channels as the reference does (divide by max |x| clamped at 1e-8, clamp to [-1, 1]).
fn postprocess(
    decoded: &Tensor<3>,
    samples: usize,
    rate: u32,
    normalize: bool,
) -> Result<Vec<Audio>> {
    let [b, c, n] = decoded.dims();
    let keep = samples.min(n);
    let values = to_vec(decoded.clone().narrow(2, 0, keep));
    // A non-finite output (extreme guidance, a custom sampler) is an error, never a WAV.
    audiox_core::limits::check_finite("generated audio sample", std::slice::from_ref(&values))?;
    (0..b)
        .map(|i| {
            let channels = (0..c)
                .map(|ch| values[(i * c + ch) * keep..(i * c + ch + 1) * keep].to_vec())
                .collect();
            let audio = Audio::new(rate, channels)?;
            Ok(if normalize {
                audio.peak_normalized()
            } else {
                audio
            })
        })
        .collect()
}

impl Components {
    /// Width of the condition streams.
    pub(crate) fn text_width(&self) -> usize {
        self.config.model.conditioning.cond_dim
    }
}
