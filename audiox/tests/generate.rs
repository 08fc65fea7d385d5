//! The public API end to end on the tiny model in the official layout (`bundle/` of the fixture
//! set): determinism, threads, requests of every modality, validation, progress, cancellation.

use std::sync::{Arc, Mutex, OnceLock};

use audiox::sampler::{Dmd, Sampler, SamplerKind};
use audiox::{
    Audio, AudioPrompt, AudioPromptMask, AudioX, CancelToken, Error, Request, StepControl,
    StillImage, VideoFrames,
};
use audiox_core::fixtures::FixtureSet;

fn model() -> &'static AudioX {
    static MODEL: OnceLock<AudioX> = OnceLock::new();
    MODEL.get_or_init(|| {
        let set = FixtureSet::open_default().unwrap();
        AudioX::builder()
            .checkpoint_dir(set.bundle_dir())
            .build()
            .unwrap()
    })
}

fn samples(audio: &Audio) -> Vec<f32> {
    audio.channels().iter().flatten().copied().collect()
}

#[test]
fn same_seed_same_audio_and_different_seeds_differ() {
    let m = model();
    let a = m
        .generate(Request::text("rain on a tin roof").seed(5))
        .unwrap();
    let b = m
        .generate(Request::text("rain on a tin roof").seed(5))
        .unwrap();
    let c = m
        .generate(Request::text("rain on a tin roof").seed(6))
        .unwrap();
    assert_eq!(a.seed, Some(5));
    assert_eq!(
        samples(&a.audio[0]),
        samples(&b.audio[0]),
        "same seed, same bits"
    );
    assert_ne!(samples(&a.audio[0]), samples(&c.audio[0]));
    // Without a seed a random one is chosen and reported; reusing it reproduces the audio.
    let d = m.generate(Request::text("rain on a tin roof")).unwrap();
    let seed = d.seed.unwrap();
    let e = m
        .generate(Request::text("rain on a tin roof").seed(seed))
        .unwrap();
    assert_eq!(samples(&d.audio[0]), samples(&e.audio[0]));
}

#[test]
fn same_seed_is_bit_identical_across_thread_counts() {
    let m = model();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let out = m
                .generate(
                    Request::text("a dog barks")
                        .seed(9)
                        .num_samples(2)
                        .keep_intermediates(true),
                )
                .unwrap();
            let latent = audiox_core::tensor::to_vec(out.intermediates.unwrap().latent);
            (latent, out.audio.iter().map(samples).collect::<Vec<_>>())
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn concurrent_requests_equal_sequential_ones() {
    let m = model();
    let prompts = [
        "birds chirp",
        "a car passes",
        "thunder rumbles",
        "a door slams",
    ];
    let sequential: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| samples(&m.generate(Request::text(*p).seed(1)).unwrap().audio[0]))
        .collect();
    let concurrent: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                s.spawn(move || samples(&m.generate(Request::text(*p).seed(1)).unwrap().audio[0]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, concurrent);
}

#[test]
fn output_is_trimmed_normalised_and_batched() {
    let m = model();
    let rate = m.sample_rate() as f64;
    let out = m
        .generate(Request::text("steps on gravel").seed(2).num_samples(3))
        .unwrap();
    assert_eq!(out.audio.len(), 3);
    for a in &out.audio {
        assert_eq!(a.num_channels(), 2);
        assert_eq!(a.num_frames(), (m.max_duration() * rate) as usize);
        assert!((a.peak() - 1.0).abs() < 1e-6, "peak {}", a.peak());
    }
    // Batch items get different noise.
    assert_ne!(samples(&out.audio[0]), samples(&out.audio[1]));
    let short = m
        .generate(
            Request::text("steps on gravel")
                .seed(2)
                .duration(m.max_duration() / 2.0)
                .normalize(false),
        )
        .unwrap();
    assert_eq!(
        short.audio[0].num_frames(),
        (m.max_duration() / 2.0 * rate) as usize
    );
    // Not normalised: the first samples equal the first sample of the batched run before
    // normalisation up to its scale.
    assert!(short.audio[0].peak() != 1.0);
}

/// A request shorter than the model's window decodes only the latent frames its samples depend
/// on; the audio equals that of the whole decode (kept when the intermediates are) up to float
/// rounding, and the kept intermediates hold the whole decode.
#[test]
fn a_short_request_decodes_only_what_it_keeps() {
    let m = model();
    let rate = m.sample_rate() as f64;
    let request = Request::text("a door creaks")
        .seed(4)
        .duration(m.max_duration() / 4.0)
        .normalize(false);
    let short = m.generate(request.clone()).unwrap();
    let whole = m.generate(request.keep_intermediates(true)).unwrap();
    let (a, b) = (samples(&short.audio[0]), samples(&whole.audio[0]));
    assert_eq!(a.len(), b.len());
    assert_eq!(
        short.audio[0].num_frames(),
        (m.max_duration() / 4.0 * rate) as usize
    );
    let peak = b.iter().fold(0.0f32, |p, x| p.max(x.abs()));
    let error = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        peak > 0.0 && error <= 1e-5 * peak,
        "error {error}, peak {peak}"
    );
    // The kept intermediates: the decode of the whole window.
    let decoded = whole.intermediates.unwrap().decoded.dims()[2];
    assert!(
        decoded >= (m.max_duration() * rate) as usize,
        "{decoded} decoded samples"
    );
}

#[test]
fn requests_the_model_cannot_serve_are_refused_before_compute() {
    let m = model();
    let max = m.max_duration();
    let refused = |r: Request| match m.generate(r) {
        Err(Error::InvalidRequest(msg)) => msg,
        other => panic!(
            "expected InvalidRequest, got {:?}",
            other.map(|g| g.timings)
        ),
    };
    // Past one window the request goes long-form (tests/long_form.rs), up to its limit.
    assert!(max < audiox::long_form::MAX_LONG_FORM_SECONDS);
    assert!(
        refused(Request::text("x").duration(audiox::long_form::MAX_LONG_FORM_SECONDS + 1.0))
            .contains("limited to")
    );
    refused(Request::text("x").duration(0.0));
    refused(Request::text("x").num_samples(0));
    // The student's DMD sampler has no guidance, and a negative prompt needs guidance.
    refused(Request::text("x").guidance(4.0));
    refused(Request::text("x").negative_prompt("noise"));
    // A sampler object carries its own steps and guidance: setting them too is refused.
    let object: Arc<dyn Sampler> = Arc::new(Dmd::new(2));
    for r in [
        Request::text("x").sampler(object.clone()).steps(8),
        Request::text("x").sampler(object.clone()).guidance(3.0),
        Request::text("x").sampler(object.clone()).cfg_rescale(0.5),
    ] {
        assert!(refused(r).contains("own schedule and guidance"));
    }
    refused(Request::text("x").steps(0));
}

#[test]
fn guided_samplers_and_negative_prompts_run() {
    let m = model();
    let guided = |neg: Option<&str>| {
        let mut r = Request::text("a bell rings")
            .seed(4)
            .sampler(SamplerKind::Euler)
            .steps(3)
            .guidance(3.0);
        if let Some(n) = neg {
            r = r.negative_prompt(n);
        }
        samples(&m.generate(r).unwrap().audio[0])
    };
    let plain = guided(None);
    let negative = guided(Some("wind noise"));
    assert_ne!(
        plain, negative,
        "the negative prompt must change the unconditional branch"
    );
    for kind in [SamplerKind::Heun, SamplerKind::DpmPp2M] {
        let out = m
            .generate(Request::text("a bell rings").seed(4).sampler(kind).steps(3))
            .unwrap();
        assert_eq!(out.sampler, kind.name());
    }
    // A sampler object from the caller.
    let custom: Arc<dyn Sampler> = Arc::new(Dmd::new(2));
    let out = m
        .generate(Request::text("a bell rings").seed(4).sampler(custom))
        .unwrap();
    assert_eq!(out.sampler, "dmd");
}

#[test]
fn progress_is_reported_and_cancellation_stops_between_steps() {
    let m = model();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut control = StepControl::new()
        .with_progress(move |info| log.lock().unwrap().push((info.step, info.total)));
    m.generate_with(Request::text("x").seed(1).steps(4), &mut control)
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(0, 4), (1, 4), (2, 4), (3, 4)]);

    let token = CancelToken::new();
    let cancel = token.clone();
    let mut control = StepControl::new()
        .with_cancel(token)
        .with_progress(move |info| {
            if info.step == 1 {
                cancel.cancel();
            }
        });
    match m.generate_with(Request::text("x").seed(1).steps(4), &mut control) {
        Err(Error::Cancelled {
            completed_steps,
            total_steps,
        }) => assert_eq!((completed_steps, total_steps), (2, 4)),
        other => panic!("expected Cancelled, got {:?}", other.map(|g| g.timings)),
    }
}

fn tone(rate: u32, seconds: f64, channels: usize) -> Audio {
    let n = (rate as f64 * seconds) as usize;
    let wave: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 0.5).collect();
    Audio::new(rate, vec![wave; channels]).unwrap()
}

#[test]
fn audio_prompts_with_every_mask() {
    let m = model();
    let rate = m.sample_rate();
    let generate = |mask: AudioPromptMask, channels: usize| {
        let mut prompt = AudioPrompt::new(tone(rate, 3.0, channels));
        prompt.mask = mask;
        samples(
            &m.generate(Request::text("x").seed(3).audio_prompt(prompt))
                .unwrap()
                .audio[0],
        )
    };
    let keep = generate(AudioPromptMask::Keep, 2);
    let random = generate(AudioPromptMask::Random, 2);
    let blank = generate(AudioPromptMask::Blank(0.0..10.0), 2);
    let mono = generate(AudioPromptMask::Keep, 1);
    assert_ne!(keep, random);
    // Mono is repeated to stereo: the same as the stereo prompt.
    assert_eq!(keep, mono);
    // Blanking the whole window equals no prompt at all, drawn the same way.
    let silent = samples(
        &m.generate(Request::text("x").seed(3).audio_prompt({
            let mut p = AudioPrompt::new(Audio::silence(rate, 2, 10).unwrap());
            p.mask = AudioPromptMask::Keep;
            p
        }))
        .unwrap()
        .audio[0],
    );
    assert_eq!(blank, silent);
    // A prompt at another sample rate is resampled.
    let mut other_rate = AudioPrompt::new(tone(rate * 2, 3.0, 2));
    other_rate.mask = AudioPromptMask::Keep;
    m.generate(Request::text("x").seed(3).audio_prompt(other_rate))
        .unwrap();
}

fn still_frames(n: usize, fps: f64) -> (VideoFrames, StillImage) {
    let (h, w) = (30usize, 40usize);
    let rgb: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 251) as u8).collect();
    let image = StillImage::from_rgb(rgb.clone(), h, w).unwrap();
    let video = VideoFrames::new(rgb.repeat(n), [n, h, w, 3], fps).unwrap();
    (video, image)
}

#[test]
fn video_and_image_requests() {
    let m = model();
    assert!(m.supports_video());
    let (video, image) = still_frames(240, 24.0);
    let run = |r: Request| {
        let out = m.generate(r.seed(8).keep_intermediates(true)).unwrap();
        let mid = out.intermediates.unwrap();
        (
            audiox_core::tensor::to_vec(mid.sync_features),
            audiox_core::tensor::to_vec(mid.video_tokens),
        )
    };
    let from_video = run(Request::text("x").video_frames(video));
    let from_image = run(Request::text("x").image(image));
    let none = run(Request::text("x"));
    // A still image is a still video: the same features (the image path runs Synchformer on
    // one segment and repeats it).
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(max_diff(&from_video.0, &from_image.0) < 1e-5);
    assert!(max_diff(&from_video.1, &from_image.1) < 1e-5);
    assert_ne!(from_video.1, none.1);
    // Without video the sync features are zeros and the learned empty feature is used.
    assert!(none.0.iter().all(|&x| x == 0.0));
}

#[test]
fn a_model_without_synchformer_refuses_video() {
    let set = FixtureSet::open_default().unwrap();
    let dir = set.bundle_dir();
    let model = AudioX::builder()
        .student_checkpoint(dir.join("audiox_turbo/audiox_turbo.ckpt"))
        .vae_checkpoint(dir.join("pretransform/vae.ckpt"))
        .t5_dir(dir.join("t5-base"))
        .clip_dir(dir.join("clip-vit-base-patch32"))
        .config(dir.join("config.json"))
        .build()
        .unwrap();
    assert!(!model.supports_video());
    let (video, _) = still_frames(10, 5.0);
    assert!(matches!(
        model.generate(Request::text("x").video_frames(video)),
        Err(Error::InvalidRequest(_))
    ));
    model.generate(Request::text("x").seed(1)).unwrap();
}

#[test]
fn builder_errors_name_what_is_missing() {
    assert!(matches!(
        AudioX::builder()
            .checkpoint_dir("/nonexistent/checkpoints")
            .build(),
        Err(Error::Io { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    let err = AudioX::builder()
        .checkpoint_dir(empty.path())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("audiox_turbo/audiox_turbo.ckpt"),
        "{err}"
    );
    // A corrupt student file is a typed weight-file error.
    let set = FixtureSet::open_default().unwrap();
    let dir = set.bundle_dir();
    let bad = empty.path().join("bad.ckpt");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let err = AudioX::builder()
        .checkpoint_dir(&dir)
        .student_checkpoint(&bad)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::WeightFile { .. }), "{err}");
}

#[test]
fn the_load_report_accounts_for_every_tensor() {
    let report = model().load_report();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert!(report.dropped.is_empty());
    assert!(
        !report.overridden.is_empty(),
        "the CLIP folder's weights are overridden by the student's copy"
    );
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.param == "decoder.conv_in.weight" || a.param.starts_with("conv_in"))
    );
}

#[test]
fn a_cloned_request_generates_the_same_audio() {
    let m = model();
    let request = Request::text("wind in the trees").noise_source(audiox::SeededNoise::new(11));
    let a = m.generate(request.clone()).unwrap();
    let b = m.generate(request).unwrap();
    assert_eq!(a.seed, None);
    assert_eq!(samples(&a.audio[0]), samples(&b.audio[0]));
    // A noise source of the seeded generator draws what the seed draws.
    let seeded = m
        .generate(Request::text("wind in the trees").seed(11))
        .unwrap();
    assert_eq!(samples(&a.audio[0]), samples(&seeded.audio[0]));
}

/// A caller's noise source: the seeded generator, except for the draws it corrupts.
#[derive(Clone)]
struct Corrupt {
    inner: audiox::SeededNoise,
    label: &'static str,
}

impl audiox::NoiseSource for Corrupt {
    fn normal(&mut self, label: &str, shape: &[usize]) -> audiox::Result<Vec<f32>> {
        let mut v = self.inner.normal(label, shape)?;
        if label == self.label {
            v[0] = f32::NAN;
        }
        Ok(v)
    }
    fn uniform(&mut self, label: &str, shape: &[usize]) -> audiox::Result<Vec<f32>> {
        let mut v = self.inner.uniform(label, shape)?;
        if label == self.label {
            v[0] = 2.0;
        }
        Ok(v)
    }
    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> audiox::Result<Vec<i64>> {
        let mut v = self.inner.integers(label, bounds)?;
        if label == self.label {
            v[0] = bounds[0].1 + 1_000_000;
        }
        Ok(v)
    }
}

#[test]
fn a_noise_source_breaking_its_contract_is_a_typed_error() {
    use audiox_core::noise::labels;
    let m = model();
    let rate = m.sample_rate();
    for label in [
        labels::INITIAL_NOISE,
        labels::AUDIO_MASK_RATIO,
        labels::AUDIO_MASK_START,
        labels::VAE_NOISE,
        labels::STEP_NOISE,
    ] {
        let noise = Corrupt {
            inner: audiox::SeededNoise::new(1),
            label,
        };
        // The random mask draws its ratio and start (the out-of-range start would index past
        // the prompt).
        let request = Request::text("x")
            .audio_prompt(AudioPrompt::new(tone(rate, 3.0, 2)))
            .noise_source(noise);
        match m.generate(request) {
            Err(Error::Contract { what, .. }) => assert!(what.contains(label), "{what}"),
            other => panic!(
                "{label}: expected Contract, got {:?}",
                other.map(|g| g.seed)
            ),
        }
    }
}

/// A sampler of the caller's that replaces the driver and returns a latent of the wrong
/// shape, or a non-finite one.
#[derive(Debug)]
struct Rogue {
    schedule: audiox::sampler::Schedule,
    extra_frames: usize,
}

impl Sampler for Rogue {
    fn name(&self) -> &str {
        "rogue"
    }
    fn schedule(&self) -> &audiox::sampler::Schedule {
        &self.schedule
    }
    fn step(
        &self,
        x: burn::tensor::Tensor<3>,
        _step: &mut audiox::sampler::Step<'_>,
    ) -> audiox::Result<burn::tensor::Tensor<3>> {
        Ok(x)
    }
    fn sample(
        &self,
        _denoiser: &dyn audiox::sampler::Denoiser,
        noise: burn::tensor::Tensor<3>,
        _rng: &mut dyn audiox::NoiseSource,
        _control: &mut StepControl<'_>,
    ) -> audiox::Result<burn::tensor::Tensor<3>> {
        let [b, c, l] = noise.dims();
        Ok(if self.extra_frames > 0 {
            burn::tensor::Tensor::zeros([b, c, l + self.extra_frames], &noise.device())
        } else {
            noise.mul_scalar(f32::INFINITY)
        })
    }
}

#[test]
fn a_custom_sampler_returning_a_bad_latent_is_a_typed_error_not_a_panic() {
    let m = model();
    let run = |extra_frames: usize| {
        let rogue: Arc<dyn Sampler> = Arc::new(Rogue {
            schedule: audiox::sampler::Schedule::linear(2),
            extra_frames,
        });
        m.generate(Request::text("x").seed(1).sampler(rogue))
    };
    match run(3) {
        Err(Error::InputShape { what, .. }) => assert!(what.contains("rogue"), "{what}"),
        other => panic!("expected InputShape, got {:?}", other.map(|g| g.seed)),
    }
    match run(0) {
        Err(Error::Contract { what, message }) => {
            assert!(
                what.contains("rogue") && message.contains("inf"),
                "{what}: {message}"
            )
        }
        other => panic!("expected Contract, got {:?}", other.map(|g| g.seed)),
    }
}

#[test]
fn a_cancel_before_the_first_or_after_the_last_step_returns_cancelled_and_no_audio() {
    let m = model();
    let steps = audiox::sampler::Defaults::STUDENT.steps;
    let cancelled = |r: audiox::Result<audiox::Generation>| match r {
        Err(Error::Cancelled {
            completed_steps,
            total_steps,
        }) => (completed_steps, total_steps),
        other => panic!("expected Cancelled, got {:?}", other.map(|g| g.timings)),
    };
    // Cancelled before the request starts: no stage runs, no step is reported.
    let token = CancelToken::new();
    token.cancel();
    let reports = Arc::new(Mutex::new(0usize));
    let count = reports.clone();
    let mut control = StepControl::new()
        .with_cancel(token)
        .with_progress(move |_| *count.lock().unwrap() += 1);
    let r = m.generate_with(Request::text("x").seed(1), &mut control);
    assert_eq!(cancelled(r), (0, steps));
    assert_eq!(*reports.lock().unwrap(), 0);
    // Cancelled from the last step's report: the sampler finished, yet no audio comes back.
    let token = CancelToken::new();
    let trigger = token.clone();
    let mut control = StepControl::new()
        .with_cancel(token)
        .with_progress(move |info| {
            if info.step + 1 == info.total {
                trigger.cancel();
            }
        });
    let r = m.generate_with(Request::text("x").seed(1), &mut control);
    assert_eq!(cancelled(r), (steps, steps));
    // With an audio prompt and a negative prompt (more stages), the same.
    let token = CancelToken::new();
    token.cancel();
    let mut control = StepControl::new().with_cancel(token);
    let r = m.generate_with(
        Request::text("x")
            .seed(1)
            .sampler(audiox::sampler::SamplerKind::Euler)
            .steps(2)
            .guidance(3.0)
            .negative_prompt("hiss")
            .audio_prompt(AudioPrompt::new(tone(m.sample_rate(), 1.0, 2))),
        &mut control,
    );
    assert_eq!(cancelled(r), (0, 2));
}

/// A cancel while ffmpeg waits on a video file stops the request within seconds: the
/// request's token reaches the decoder (a FIFO nobody writes to stalls ffmpeg forever).
#[cfg(all(unix, feature = "video"))]
#[test]
fn a_cancel_while_the_video_file_is_read_stops_the_request() {
    use std::process::Command;
    let have_ffmpeg = Command::new("ffprobe").arg("-version").output().is_ok();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stall.mp4");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !have_ffmpeg || !made.is_ok_and(|s| s.success()) {
        eprintln!("NOTICE: ffprobe or mkfifo unavailable; test skipped");
        return;
    }
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            token.cancel();
        })
    };
    let started = std::time::Instant::now();
    let mut control = StepControl::new().with_cancel(token);
    let result = model().generate_with(Request::text("x").video_file(&fifo).seed(1), &mut control);
    canceller.join().unwrap();
    assert!(
        matches!(result, Err(Error::Cancelled { .. })),
        "{:?}",
        result.map(|g| g.seed)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_repeated_prompt_gives_the_same_audio_from_the_text_cache() {
    // The model keeps the text condition of its last prompts; a prompt seen before must give
    // exactly what it gave the first time, whatever came in between (other prompts, and
    // enough of them to evict it).
    let m = model();
    let run = |prompt: &str| {
        let out = m
            .generate(Request::text(prompt).seed(11).keep_intermediates(true))
            .unwrap();
        let text = out.intermediates.as_ref().unwrap().text_tokens.clone();
        (
            samples(&out.audio[0]),
            text.into_data().try_to_vec::<f32>().unwrap(),
        )
    };
    let first = run("a wooden door creaks");
    let other = run("rain on a tin roof");
    assert_ne!(first.1, other.1, "different prompts, different text tokens");
    assert_eq!(
        run("a wooden door creaks"),
        first,
        "cached right after another prompt"
    );
    for p in ["one", "two", "three", "four"] {
        run(p);
    }
    assert_eq!(
        run("a wooden door creaks"),
        first,
        "recomputed after eviction"
    );
    assert_eq!(run("rain on a tin roof"), other);
}
