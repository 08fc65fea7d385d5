//! Hostile input, end to end: every value or file below must end with a typed error, quickly,
//! with bounded memory, and without writing anything. The `generate` program is run on each
//! case (exit status 1, exactly one `error:` line, no file written, a 4 GiB address-space
//! limit), and the library path is checked on the same values and on a few a program cannot
//! produce (a custom sampler returning NaN, lowered limits).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use audiox::sampler::{Denoiser, Sampler, SamplerKind, Schedule, Step, StepControl};
use audiox::{
    Audio, AudioPrompt, AudioPromptMask, AudioX, Error, Limits, NoiseSource, Request, StillImage,
    VideoFrames,
};
use audiox_core::fixtures::FixtureSet;
use burn::tensor::Tensor;

fn bundle() -> PathBuf {
    FixtureSet::open_default()
        .unwrap()
        .bundle_dir()
        .to_path_buf()
}

fn model() -> &'static AudioX {
    static MODEL: OnceLock<AudioX> = OnceLock::new();
    MODEL.get_or_init(|| AudioX::builder().checkpoint_dir(bundle()).build().unwrap())
}

/// A 16-bit PCM WAV file with `frames` frames of a quiet tone, whatever `rate` the header says.
fn wav_pcm16(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..frames * channels as usize)
        .flat_map(|i| (((i as f32 * 0.05).sin() * 3000.0) as i16).to_le_bytes())
        .collect();
    wav(1, 16, rate, channels, &data)
}

/// A 32-bit float WAV file of `samples` (interleaved).
fn wav_f32(rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = samples.iter().flat_map(|x| x.to_le_bytes()).collect();
    wav(3, 32, rate, channels, &data)
}

fn wav(format: u16, bits: u16, rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
    let align = channels * bits / 8;
    let mut out = b"RIFF".to_vec();
    out.extend((36 + data.len() as u32).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(16u32.to_le_bytes());
    out.extend(format.to_le_bytes());
    out.extend(channels.to_le_bytes());
    out.extend(rate.to_le_bytes());
    out.extend(rate.wrapping_mul(align as u32).to_le_bytes());
    out.extend(align.to_le_bytes());
    out.extend(bits.to_le_bytes());
    out.extend(b"data");
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out
}

/// A PNG whose header claims `width x height` (signature, IHDR, a stub IDAT, IEND).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        c.extend(&body);
        c.extend(crc32(&body).to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]));
    png.extend(chunk(b"IEND", &[]));
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The hostile files, in a fresh folder.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let seconds = model().max_duration() as usize;
        std::fs::write(d.join("prime.wav"), wav_pcm16(1_999_999_973, 2, 44_100)).unwrap();
        std::fs::write(d.join("long.wav"), wav_pcm16(8000, 2, 8000 * 2 * seconds)).unwrap();
        let mut nan = vec![0.1f32; 2 * 8000];
        nan[201] = f32::NAN;
        std::fs::write(d.join("nan.wav"), wav_f32(8000, 2, &nan)).unwrap();
        let mut inf = vec![0.1f32; 2 * 8000];
        inf[7] = f32::INFINITY;
        std::fs::write(d.join("inf.wav"), wav_f32(8000, 2, &inf)).unwrap();
        std::fs::write(d.join("huge.png"), png_header(100_000, 100_000)).unwrap();
        std::fs::write(d.join("wide.png"), png_header(u32::MAX, 1)).unwrap();
        std::fs::write(d.join("junk.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        std::fs::write(
            d.join("playlist.mp4"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n\
             #EXT-X-ENDLIST\n",
        )
        .unwrap();
        std::fs::write(
            d.join("concat.mp4"),
            "ffconcat version 1.0\nfile /etc/passwd\n",
        )
        .unwrap();
        // Not a real video: the mux checks run before the video is read.
        std::fs::write(d.join("v.mp4"), b"not decoded").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.join("v.mp4"), d.join("link.mp4")).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn listing(&self) -> Vec<PathBuf> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
    }
}

/// The `generate` example, built next to this test by `cargo test` / `cargo build --examples`.
fn generate_program() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let program = profile_dir
        .join("examples")
        .join(format!("generate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        program.exists(),
        "{} is missing: `cargo test` builds the examples with the tests (or run \
         `cargo build --release -p audiox --example generate`)",
        program.display()
    );
    program
}

#[test]
fn the_generate_program_ends_every_hostile_case_with_one_error_line() {
    let program = generate_program();
    let files = Files::new();
    let f = |name: &str| files.path(name).display().to_string();
    let long_prompt = "a".repeat(Limits::default().max_prompt_chars + 1);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--steps".into(), "4000000000".into()], "steps"),
        (
            vec!["--num-samples".into(), "100000000".into()],
            "num_samples",
        ),
        (vec!["--num-samples".into(), "0".into()], "num_samples"),
        (vec!["--duration".into(), "nan".into()], "duration"),
        (vec!["--duration".into(), "1e300".into()], "duration"),
        (vec!["--duration=-1".into()], "duration"),
        (
            vec![
                "--sampler".into(),
                "euler".into(),
                "--cfg".into(),
                "nan".into(),
            ],
            "guidance",
        ),
        (
            vec![
                "--sampler".into(),
                "euler".into(),
                "--cfg".into(),
                "1e30".into(),
            ],
            "guidance",
        ),
        (vec!["--prompt".into(), long_prompt.clone()], "prompt"),
        (
            vec![
                "--sampler".into(),
                "euler".into(),
                "--cfg".into(),
                "3".into(),
                "--negative-prompt".into(),
                long_prompt,
            ],
            "negative prompt",
        ),
        (vec!["--audio-prompt".into(), f("prime.wav")], "sample rate"),
        (
            vec![
                "--audio-prompt".into(),
                f("long.wav"),
                "--start".into(),
                "1e15".into(),
            ],
            "start",
        ),
        (
            vec![
                "--audio-prompt".into(),
                f("long.wav"),
                "--start".into(),
                "inf".into(),
            ],
            "start",
        ),
        (
            vec![
                "--audio-prompt".into(),
                f("long.wav"),
                "--start".into(),
                "5000".into(),
            ],
            "end of the file",
        ),
        (
            vec![
                "--audio-prompt".into(),
                f("long.wav"),
                "--audio-mask".into(),
                "0:1e300".into(),
            ],
            "mask",
        ),
        (vec!["--audio-prompt".into(), f("nan.wav")], "finite"),
        (vec!["--audio-prompt".into(), f("inf.wav")], "finite"),
        (vec!["--audio-prompt".into(), f("junk.png")], "audio"),
        (vec!["--image".into(), f("huge.png")], "image size"),
        (vec!["--image".into(), f("wide.png")], "image"),
        (vec!["--image".into(), f("junk.png")], "image"),
        #[cfg(feature = "video")]
        (vec!["--video".into(), f("playlist.mp4")], "ffprobe"),
        #[cfg(feature = "video")]
        (vec!["--video".into(), f("concat.mp4")], "ffprobe"),
        #[cfg(feature = "video")]
        (vec!["--video".into(), f("absent.mp4")], "absent.mp4"),
        #[cfg(feature = "video")]
        (
            vec!["--video".into(), f("v.mp4"), format!("--mux=-{}", "x.mp4")],
            "mux target",
        ),
        #[cfg(feature = "video")]
        (
            vec!["--video".into(), f("v.mp4"), "--mux".into(), f("v.mp4")],
            "is the input",
        ),
        #[cfg(all(unix, feature = "video"))]
        (
            vec!["--video".into(), f("v.mp4"), "--mux".into(), f("link.mp4")],
            "is the input",
        ),
    ];
    let before = files.listing();
    for (args, expect) in cases {
        let started = Instant::now();
        // The address space is capped at 4 GiB: a case that allocated what its value asks for
        // would abort (not exit with status 1) and fail the test.
        let out = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 4194304; exec \"$0\" \"$@\"")
            .arg(&program)
            .arg("--out")
            .arg(files.path("out.wav"))
            .args(&args)
            .current_dir(files.dir.path())
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(60).collect()).collect();
        assert_eq!(out.status.code(), Some(1), "{shown:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{shown:?}: {stderr}");
        assert!(errors[0].contains(expect), "{shown:?}: {}", errors[0]);
        assert!(
            stderr.lines().all(|l| !l.contains("panicked")),
            "{shown:?}: {stderr}"
        );
        assert!(elapsed < Duration::from_secs(30), "{shown:?}: {elapsed:?}");
        assert_eq!(files.listing(), before, "{shown:?} wrote a file");
    }
}

/// `result` is an [`Error::OutOfRange`] whose message holds `field`.
fn out_of_range(result: audiox::Result<audiox::Generation>, field: &str) {
    match result {
        Err(e @ Error::OutOfRange { .. }) => {
            assert!(e.to_string().contains(field), "{e} vs {field}")
        }
        Err(other) => panic!("{field}: expected OutOfRange, got {other}"),
        Ok(_) => panic!("{field}: accepted"),
    }
}

/// `result` is an [`Error::InvalidRequest`] (a bound of the model, not of the limits) whose
/// message holds `what`.
fn refused(result: audiox::Result<audiox::Generation>, what: &str) {
    match result {
        Err(Error::InvalidRequest(msg)) => assert!(msg.contains(what), "{msg} vs {what}"),
        Err(other) => panic!("{what}: expected InvalidRequest, got {other}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[test]
fn the_library_refuses_values_out_of_range_before_any_work() {
    let m = model();
    let limits = m.limits().clone();
    let started = Instant::now();
    let r = || Request::text("x").seed(1);
    out_of_range(m.generate(r().steps(limits.max_steps + 1)), "steps");
    out_of_range(m.generate(r().steps(usize::MAX)), "steps");
    refused(m.generate(r().num_samples(0)), "num_samples");
    out_of_range(m.generate(r().num_samples(usize::MAX)), "num_samples");
    // (Durations past one window go to long-form generation, which has its own bound.)
    for d in [f64::NAN, -1.0, 0.0] {
        refused(m.generate(r().duration(d)), "duration");
    }
    for g in [f32::NAN, f32::INFINITY, -1.0, limits.max_guidance * 2.0] {
        out_of_range(
            m.generate(r().sampler(SamplerKind::Euler).guidance(g)),
            "guidance",
        );
    }
    for phi in [f32::NAN, -0.5, 1.5] {
        out_of_range(m.generate(r().cfg_rescale(phi)), "cfg_rescale");
    }
    for s in [f64::NAN, -1.0, 1e15] {
        out_of_range(m.generate(r().video_start(s)), "video start");
    }
    let long = "é".repeat(limits.max_prompt_chars + 1);
    out_of_range(m.generate(Request::text(long.clone())), "prompt");
    // Multi-byte characters count once: exactly at the limit is accepted by the check.
    let at_limit = "é".repeat(limits.max_prompt_chars);
    assert!(
        !matches!(
            m.generate(Request::text(at_limit).seed(1)),
            Err(Error::OutOfRange { .. })
        ),
        "a prompt at the limit is refused"
    );

    let rate = m.sample_rate();
    let clip = |r: u32, frames: usize| Audio::new(r, vec![vec![0.1; frames]; 2]).unwrap();
    let prompt = |a: Audio, start: f64| {
        let mut p = AudioPrompt::new(a);
        p.start_seconds = start;
        p.mask = AudioPromptMask::Keep;
        r().audio_prompt(p)
    };
    out_of_range(
        m.generate(prompt(clip(1_999_999_973, 4), 0.0)),
        "sample rate",
    );
    out_of_range(m.generate(prompt(clip(rate, rate as usize), 1e15)), "start");
    out_of_range(m.generate(prompt(clip(rate, rate as usize), 1.5)), "start");
    out_of_range(m.generate(prompt(clip(rate, 0), 0.0)), "start");
    out_of_range(
        m.generate(prompt(clip(rate, rate as usize), f64::NAN)),
        "start",
    );
    let mut bad = vec![vec![0.1f32; rate as usize]; 2];
    bad[1][3] = f32::NAN;
    out_of_range(
        m.generate(prompt(Audio::new(rate, bad).unwrap(), 0.0)),
        "finite",
    );
    let too_long = (limits.max_prompt_audio_seconds * rate as f64) as usize + rate as usize;
    out_of_range(m.generate(prompt(clip(rate, too_long), 0.0)), "duration");

    let side = limits.max_image_side + 1;
    let wide = StillImage::from_rgb(vec![0; side * 3], 1, side).unwrap();
    out_of_range(m.generate(r().image(wide)), "image");
    let frames = limits.max_video_frames + 1;
    let video = VideoFrames::new(vec![0; frames * 3], [frames, 1, 1, 3], 25.0).unwrap();
    out_of_range(m.generate(r().video_frames(video)), "video frames");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn lowered_limits_are_applied() {
    let m = AudioX::builder()
        .checkpoint_dir(bundle())
        .limits(Limits {
            max_steps: 2,
            max_num_samples: 1,
            ..Limits::default()
        })
        .build()
        .unwrap();
    out_of_range(m.generate(Request::text("x").steps(3)), "steps");
    out_of_range(m.generate(Request::text("x").num_samples(2)), "num_samples");
    assert!(m.generate(Request::text("x").steps(2).seed(1)).is_ok());
}

/// A sampler that scales the noise by a constant: NaN (a broken user sampler) is caught on the
/// latent; a huge finite value (guidance blown up) overflows in the decoder and is caught on
/// the output.
#[derive(Debug)]
struct Scaled {
    factor: f32,
    schedule: Schedule,
}

impl Sampler for Scaled {
    fn name(&self) -> &str {
        "scaled"
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn step(&self, x: Tensor<3>, _step: &mut Step<'_>) -> audiox::Result<Tensor<3>> {
        Ok(x)
    }

    fn sample(
        &self,
        _denoiser: &dyn Denoiser,
        noise: Tensor<3>,
        _rng: &mut dyn NoiseSource,
        _control: &mut StepControl<'_>,
    ) -> audiox::Result<Tensor<3>> {
        Ok(noise.mul_scalar(self.factor))
    }
}

#[test]
fn a_non_finite_output_is_an_error_never_audio() {
    let m = model();
    let mut on_output = 0;
    for factor in [f32::NAN, 3e37, 1e38] {
        for normalize in [true, false] {
            let sampler: std::sync::Arc<dyn Sampler> = std::sync::Arc::new(Scaled {
                factor,
                schedule: Schedule::linear(1),
            });
            let result = m.generate(
                Request::text("x")
                    .seed(1)
                    .sampler(sampler)
                    .normalize(normalize),
            );
            match result {
                Err(Error::OutOfRange { field, .. }) => {
                    assert!(field.contains("generated audio"), "{field}");
                    on_output += 1;
                }
                // A non-finite latent is caught before the decoder.
                Err(Error::Contract { .. }) => {}
                Err(other) => panic!("expected OutOfRange or Contract, got {other}"),
                Ok(_) => panic!("non-finite audio was returned (factor {factor})"),
            }
        }
    }
    assert!(on_output > 0, "no case reached the output check");
    // And a buffer holding NaN is never written as a WAV file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.wav");
    let audio = Audio::new(8000, vec![vec![0.0, f32::NAN]]).unwrap();
    assert!(matches!(
        audio.write_wav(&path),
        Err(Error::OutOfRange { .. })
    ));
    assert!(!path.exists());
    // The peak normaliser does not skip NaN.
    assert!(audio.peak().is_nan());
}

/// Random requests: boundary and random values in every numeric field, on the tiny model.
/// Each generation succeeds or returns an error; a panic fails (`AUDIOX_FUZZ_CASES` scales it).
#[test]
fn random_request_fields_never_panic() {
    use audiox_core::fuzz::{Mutator, cases};
    let m = model();
    let max = m.max_duration();
    let rate = m.sample_rate();
    let mut r = Mutator::new(21);
    let floats = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        max,
        max + 1e-9,
        1e-300,
        1e300,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        86_400.0,
        86_400.1,
    ];
    let counts = [0usize, 1, 2, 3, 4, 16, 17, 1000, 1001, usize::MAX];
    for case in 0..cases(60) {
        let mut req = Request::text(r.pick(&["", "x", "rain", "\u{0}\u{ffff}"]).to_string());
        if r.below(2) == 0 {
            req = req.seed(r.next_u64());
        }
        // Steps and samples stay small when valid, so that each case runs in milliseconds.
        let steps = *r.pick(&counts);
        if r.below(2) == 0 && (steps > 8 || steps == 0 || r.below(4) == 0) {
            req = req.steps(steps);
        }
        let n = *r.pick(&counts);
        if n > 2 {
            req = req.num_samples(n.max(17));
        } else {
            req = req.num_samples(n);
        }
        if r.below(2) == 0 {
            req = req.duration(*r.pick(&floats));
        }
        if r.below(3) == 0 {
            let kind = *r.pick(&[
                SamplerKind::Euler,
                SamplerKind::Heun,
                SamplerKind::DpmPp2M,
                SamplerKind::Dmd,
            ]);
            req = req.sampler(kind).steps(1 + r.below(2));
        }
        if r.below(3) == 0 {
            req = req.guidance(*r.pick(&floats) as f32);
        }
        if r.below(3) == 0 {
            req = req.cfg_rescale(*r.pick(&floats) as f32);
        }
        if r.below(3) == 0 {
            req = req.video_start(*r.pick(&floats));
        }
        if r.below(3) == 0 {
            let prompt_rate = *r.pick(&[rate, 1, 7, 8000, 44_101, 384_000, 384_001, u32::MAX]);
            let frames = r.below(3 * prompt_rate.min(50_000) as usize);
            let mut channels = vec![vec![0.1f32; frames]; 1 + r.below(3)];
            if frames > 0 && r.below(4) == 0 {
                channels[0][frames - 1] = *r.pick(&[f32::NAN, f32::INFINITY, 1e30]);
            }
            if let Ok(audio) = Audio::new(prompt_rate, channels) {
                let mut p = AudioPrompt::new(audio);
                p.start_seconds = *r.pick(&floats);
                p.mask = match r.below(3) {
                    0 => AudioPromptMask::Random,
                    1 => AudioPromptMask::Keep,
                    _ => AudioPromptMask::Blank(*r.pick(&floats)..*r.pick(&floats)),
                };
                req = req.audio_prompt(p);
            }
        }
        let label = format!("case {case}: {req:?}");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.generate(req)));
        match result {
            Ok(Ok(out)) => {
                for a in &out.audio {
                    assert!(a.check_finite("output").is_ok(), "{label}");
                }
            }
            Ok(Err(_)) => {}
            Err(_) => panic!("panicked: {label}"),
        }
    }
}
