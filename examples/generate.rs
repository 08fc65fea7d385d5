//! Generate audio from text, video, an image and/or an audio prompt.
//!
//! ```text
//! cargo run --release --example generate -- --prompt "a dog barks twice, then a car passes"
//! cargo run --release --example generate -- --model HKUSTAudio/AudioX-Turbo --prompt "rain" --seed 7
//! cargo run --release --example generate -- --checkpoint-dir checkpoints \
//!     --prompt "waves crash on a rocky beach" --video beach.mp4 --mux beach_with_sound.mp4
//! cargo run --release --example generate -- --duration 60 --prompt "rain on a tin roof"
//! # weights held in bf16 (or int8 for the diffusion transformer): less memory, small error
//! cargo run --release --example generate -- --precision bf16 --prompt "rain on a tin roof"
//! # game-ready sound effects: 4 variations, 48 kHz mono 16-bit, -16 LUFS, trimmed, faded,
//! # with a spectrogram of each
//! cargo run --release --example generate -- --prompt "a sword swing" --num-samples 4 \
//!     --sample-rate 48000 --mono --pcm16 --loudness -16 --trim-silence --fade-out 0.1 \
//!     --spectrogram sword.png --out sword.wav
//! ```
//!
//! `--model` downloads the model and its encoders from the Hugging Face Hub into the standard
//! cache (once; `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN`, `HF_HUB_OFFLINE=1` apply).
//!
//! Past the model's 10 s window (a longer `--duration`, or a `--video` longer than 10 s without
//! one) the audio is generated window by window and each finished span is written to the WAV
//! file as soon as it is final.
//!
//! Without `--model` or `--checkpoint-dir` the program runs the small demo model embedded in the
//! `audiox` crate (`AudioX::demo()`: trained by the project on procedural sound events, not
//! AudioX-Turbo) when this build carries it, else the small random-weight model of the
//! repository (`fixtures/tiny/bundle`: it exercises the whole pipeline, but its sound is not
//! meaningful). Either way it says so on stderr. `docs/weights.md` explains how to get the
//! official weights.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audiox::sampler::SamplerKind;
use audiox::{
    Audio, AudioPrompt, AudioPromptMask, AudioX, ImageScaling, LongFormOptions, Request,
    StepControl, StillImage, WavFormat, WavStream,
};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

/// AudioX-Turbo: anything-to-audio generation.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Text prompt.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Checkpoint folder in the official layout (see docs/weights.md). Without it (and without
    /// --model), the embedded demo model is used when this build has it, else the small
    /// random-weight model of the repository.
    #[arg(long, conflicts_with = "model")]
    checkpoint_dir: Option<PathBuf>,
    /// A model repository on the Hugging Face Hub (`HKUSTAudio/AudioX-Turbo`), downloaded into
    /// the Hugging Face cache on first use (needs the `hub` feature, on by default).
    #[arg(long)]
    model: Option<String>,
    /// Branch, tag or commit of --model.
    #[arg(long, requires = "model", default_value = "main")]
    revision: String,
    /// Use the teacher checkpoint (`pretrained_ckpt/pretrained_ckpt.ckpt` of the folder, the
    /// embedded demo model's teacher without --checkpoint-dir, or this
    /// file) as the denoiser.
    // An OsString parser: clap's PathBuf parser refuses the empty value that marks a bare
    // `--teacher`.
    #[arg(long, num_args = 0..=1, default_missing_value = "",
          value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from))]
    teacher: Option<PathBuf>,
    /// A video to condition on (video-to-audio); needs ffmpeg.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Seconds into the video (and audio prompt) where conditioning starts.
    #[arg(long, default_value_t = 0.0)]
    start: f64,
    /// Write a copy of --video with the generated audio as its soundtrack.
    #[arg(long, requires = "video")]
    mux: Option<PathBuf>,
    /// A still image (PNG/JPEG) to condition on.
    #[arg(long, conflicts_with = "video")]
    image: Option<PathBuf>,
    /// Scale the image like the reference does (divided by 255 twice; near-black for CLIP).
    #[arg(long, requires = "image")]
    reference_image_scaling: bool,
    /// An audio prompt (WAV, FLAC, MP3, Ogg/Vorbis) for continuation / inpainting.
    #[arg(long)]
    audio_prompt: Option<PathBuf>,
    /// How the audio prompt is masked: `random` (reference), `keep`, or `START:END` seconds to
    /// blank (inpainting).
    #[arg(long, default_value = "random")]
    audio_mask: String,
    /// Random seed (random when not given; the one used is printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Sampler steps (default: 4 for the student, 250 for the teacher, or the --sampler's own;
    /// table in docs/samplers.md).
    #[arg(long)]
    steps: Option<usize>,
    /// Sampler: dmd, euler, heun, dpmpp-2m (default: dmd for the student, euler for the teacher;
    /// default steps and guidance in docs/samplers.md).
    #[arg(long)]
    sampler: Option<SamplerKind>,
    /// Classifier-free guidance scale (needs a guided sampler).
    #[arg(long)]
    cfg: Option<f32>,
    /// Negative prompt (the unconditional branch of guidance).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Number of variations of the prompt to generate in one call.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Seconds of audio. Past the model's window (10 s) the audio is generated by windowed
    /// continuation and streamed to the file (see docs/guide.md). Default: the window, or the
    /// whole --video after --start.
    #[arg(long)]
    duration: Option<f64>,
    /// Long audio: seconds each window shares with the previous one, the context it continues
    /// from (default: a tenth of the window, 1 s for 10 s windows).
    #[arg(long)]
    overlap: Option<f64>,
    /// Long audio: seconds of the equal-power crossfade between windows (default: the overlap).
    #[arg(long)]
    crossfade: Option<f64>,
    /// Skip the reference's peak normalisation.
    #[arg(long)]
    no_normalize: bool,
    /// Write 16-bit PCM instead of 32-bit float WAV.
    #[arg(long)]
    pcm16: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device: `cpu` (burn's flex backend), or `wgpu` / `vulkan` / `cuda` in builds
    /// with that feature of the audiox crate (the default GPU adapter).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision. On the CPU, how the weights are held: `f32` (the default; the reference),
    /// `bf16` or `int8` (the diffusion transformer in int8, the conditioners in bf16); products
    /// on the CPU's AMX tiles or bf16 / int8 dot products where it has them, on the widened
    /// weight in f32 elsewhere (docs/guide.md, "Precision"). On a GPU device, the float type it
    /// computes in: `f32`, `f16` or `bf16` (where it does), or `int8` (f32 compute, int8 weights).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Decode the latent in chunks of this many latent frames, each with the decoder's
    /// receptive radius of context (same audio up to float rounding, less memory); 0 decodes
    /// it whole (the default). 64 (`audiox::LOW_MEMORY_DECODE_CHUNK`) saves about 0.3 GB of
    /// peak memory at full size for about +10 % of the request's time.
    #[arg(long)]
    decode_chunk: Option<usize>,
    /// Output WAV file (`_N` is added before the extension for several samples).
    #[arg(long, short, default_value = "audiox.wav")]
    out: PathBuf,
    // -- Sound-effect output options (issue 18; see audiox::postprocess) ---------------------
    /// Resample the output to this rate in Hz (e.g. 48000, 22050).
    #[arg(long)]
    sample_rate: Option<u32>,
    /// Down-mix the output to mono.
    #[arg(long)]
    mono: bool,
    /// Normalise to this integrated loudness in LUFS (EBU R128) instead of the peak.
    #[arg(long, allow_negative_numbers = true)]
    loudness: Option<f64>,
    /// Trim leading and trailing silence (below -50 dBFS, or the level given).
    #[arg(long, num_args = 0..=1, default_missing_value = "-50", allow_negative_numbers = true)]
    trim_silence: Option<f32>,
    /// Fade out over the last this-many seconds.
    #[arg(long)]
    fade_out: Option<f64>,
    /// Also write a log-mel spectrogram PNG of each output (`_N` added for several samples).
    #[arg(long)]
    spectrogram: Option<PathBuf>,
}

/// The sound-effect output options of the command line (issue 18).
fn output_options(args: &Args) -> audiox::OutputOptions {
    let mut o = audiox::OutputOptions::new();
    if let Some(hz) = args.sample_rate {
        o = o.sample_rate(hz);
    }
    o = o.mono(args.mono);
    if let Some(lufs) = args.loudness {
        o = o.loudness(lufs);
    }
    if let Some(db) = args.trim_silence {
        o = o.trim_silence(Some(db));
    }
    if let Some(s) = args.fade_out {
        o = o.fade_out(s);
    }
    if args.pcm16 {
        o = o.format(WavFormat::Pcm16);
    }
    o
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--precision` for `device`: the device's compute precision and how the weights are held.
fn precisions(
    device: &str,
    precision: &str,
) -> audiox::Result<(audiox::Precision, audiox::WeightPrecision)> {
    use audiox::{Precision, WeightPrecision};
    let cpu = matches!(device, "cpu" | "flex");
    if cpu || precision.eq_ignore_ascii_case("int8") {
        // The CPU computes in f32; the choice is how the weights are held.
        Ok((Precision::F32, precision.parse()?))
    } else {
        Ok((precision.parse()?, WeightPrecision::F32))
    }
}

fn shipped_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny/bundle")
}

fn run(args: Args) -> audiox::Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| audiox::Error::InvalidRequest(format!("--threads: {e}")))?;
    }
    let (device_precision, weights_precision) = precisions(&args.device, &args.precision)?;
    let builder = match &args.model {
        Some(repo) => hub_builder(repo, &args)?,
        None => dir_builder(&args),
    }
    .device(audiox::select_device(&args.device, device_precision)?)
    .weights_precision(weights_precision);
    let builder = match args.decode_chunk {
        None => builder,
        Some(0) => builder.whole_decode(),
        Some(frames) => builder.exact_chunked_decode(frames),
    };
    let loading = std::time::Instant::now();
    let model = builder.build()?;
    eprintln!(
        "loaded {:?} model in {:.1} s ({}; {} threads; weights {}, {:.1} MB)",
        model.kind(),
        loading.elapsed().as_secs_f64(),
        model.load_report().summary(),
        rayon::current_num_threads(),
        model.weights_precision(),
        model.held_weight_bytes().total() as f64 / 1e6
    );

    // Hostile input: files are read within the model's limits, and the mux target is checked
    // before any work, so a bad value ends with one error and nothing written.
    let limits = model.limits().clone();
    limits.check_start("--start", args.start)?;
    if let (Some(video), Some(target)) = (&args.video, &args.mux) {
        check_mux(video, target)?;
    }

    let mut request = Request::text(args.prompt.clone()).num_samples(args.num_samples);
    if let Some(seed) = args.seed {
        request = request.seed(seed);
    }
    if let Some(steps) = args.steps {
        request = request.steps(steps);
    }
    if let Some(kind) = args.sampler {
        request = request.sampler(kind);
    }
    if let Some(cfg) = args.cfg {
        request = request.guidance(cfg);
    }
    if let Some(neg) = &args.negative_prompt {
        request = request.negative_prompt(neg.clone());
    }
    if let Some(d) = args.duration {
        request = request.duration(d);
    }
    request = request.normalize(!args.no_normalize);
    request = request.output(output_options(&args));
    if let Some(video) = &args.video {
        request = request.video_file(video.clone()).video_start(args.start);
    }
    if let Some(image) = &args.image {
        request = request
            .image(StillImage::open_with_limits(image, &limits)?)
            .image_scaling(if args.reference_image_scaling {
                ImageScaling::Reference
            } else {
                ImageScaling::LikeVideo
            });
    }
    if let Some(path) = &args.audio_prompt {
        // Only the window the model sees is decoded (with the resampler's margin before it).
        let margin = audiox_core::audio::RESAMPLE_MARGIN_SECONDS;
        let from = (args.start - margin).max(0.0);
        let seconds = args.start - from + model.max_duration() + margin;
        let audio = Audio::read_window(path, from, seconds, &limits)?;
        let mut prompt = AudioPrompt::new(audio);
        prompt.start_seconds = args.start - from;
        prompt.mask = parse_mask(&args.audio_mask)?;
        request = request.audio_prompt(prompt);
    }

    // Long-form: past one window (a long --duration, or a whole video longer than the window),
    // stream the windows to the file.
    let format = if args.pcm16 {
        WavFormat::Pcm16
    } else {
        WavFormat::Float32
    };
    if args.num_samples == 1 && long_form_needed(&model, &args)? {
        return run_long(&model, request, &args, format);
    }

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} sampling [{bar:30}] {pos}/{len} steps  t = {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let progress_bar = bar.clone();
    let mut control = StepControl::new().with_progress(move |info| {
        progress_bar.set_length(info.total as u64);
        progress_bar.set_position(info.step as u64 + 1);
        progress_bar.set_message(format!("{:.3}", info.t_next));
    });
    let out = model.generate_with(request, &mut control)?;
    bar.finish_and_clear();

    let paths: Vec<PathBuf> = (0..out.audio.len())
        .map(|i| numbered(&args.out, i, out.audio.len()))
        .collect();
    for (audio, path) in out.audio.iter().zip(&paths) {
        audio.write_wav_as(path, format)?;
        println!(
            "wrote {} ({:.2} s, {} Hz, {} channels)",
            path.display(),
            audio.duration_secs(),
            audio.sample_rate(),
            audio.num_channels()
        );
    }
    // Spectrograms (issue 18).
    if let Some(png) = &args.spectrogram {
        let options = audiox::spectrogram::SpectrogramOptions::default();
        for (i, audio) in out.audio.iter().enumerate() {
            let path = numbered(png, i, out.audio.len());
            audiox::spectrogram::write_png(audio, &path, &options)?;
            println!("wrote {}", path.display());
        }
    }
    match out.seed {
        Some(seed) => println!("seed {seed}, sampler {}", out.sampler),
        None => println!("sampler {}", out.sampler),
    }
    println!("timings: {}", out.timings);
    if let (Some(video), Some(target)) = (&args.video, &args.mux) {
        mux(
            video,
            &paths[0],
            target,
            args.start,
            out.audio[0].duration_secs(),
        )?;
        println!("wrote {}", target.display());
    }
    Ok(())
}

/// The builder for a checkpoint folder, else the embedded demo model, else the repository's
/// tiny random-weight model.
fn dir_builder(args: &Args) -> audiox::AudioXBuilder {
    let dir = match &args.checkpoint_dir {
        Some(dir) => dir.clone(),
        None if audiox::demo::is_available() => {
            eprintln!("==================================================================");
            eprintln!(" No --model or --checkpoint-dir: running the small DEMO model");
            eprintln!(" embedded in audiox (AudioX::demo()), trained by this project on");
            eprintln!(" procedural sound events (beeps, clicks, knocks, chirps, thuds,");
            eprintln!(" bells, whooshes, buzzes). It is NOT AudioX-Turbo. For the official");
            eprintln!(" model: --model HKUSTAudio/AudioX-Turbo (docs/weights.md).");
            eprintln!("==================================================================");
            let builder = AudioX::builder().demo();
            return match &args.teacher {
                None => builder,
                // `--teacher` alone: the demo's own teacher.
                Some(t) if t.as_os_str().is_empty() => {
                    builder.denoiser(audiox::DenoiserKind::Teacher)
                }
                // A teacher file cannot be mixed with the embedded model: the build says so.
                Some(t) => builder.teacher_checkpoint(t),
            };
        }
        None => {
            eprintln!("==================================================================");
            eprintln!(" No --model or --checkpoint-dir: running the small model shipped in");
            eprintln!(" the repo. Its weights are RANDOM: the output exercises the whole");
            eprintln!(" pipeline but is not meaningful sound. See docs/weights.md.");
            eprintln!("==================================================================");
            shipped_bundle()
        }
    };
    let mut builder = AudioX::builder().checkpoint_dir(&dir);
    if let Some(teacher) = &args.teacher {
        let path = if teacher.as_os_str().is_empty() {
            // The official file, else its converted form (examples/convert.rs --teacher).
            let official = dir.join("pretrained_ckpt/pretrained_ckpt.ckpt");
            let converted = dir.join("pretrained_ckpt/pretrained_ckpt.safetensors");
            if !official.exists() && converted.exists() {
                converted
            } else {
                official
            }
        } else {
            teacher.clone()
        };
        builder = builder.teacher_checkpoint(path);
    }
    builder
}

/// The builder for a hub repository: downloads (or finds in the cache) its files.
#[cfg(feature = "hub")]
fn hub_builder(repo: &str, args: &Args) -> audiox::Result<audiox::AudioXBuilder> {
    let own_teacher = args.teacher.as_ref().filter(|t| !t.as_os_str().is_empty());
    let builder = AudioX::pretrained(repo)
        .revision(args.revision.clone())
        .teacher(args.teacher.is_some() && own_teacher.is_none())
        .into_builder()?;
    Ok(match own_teacher {
        Some(path) => builder.teacher_checkpoint(path),
        None => builder,
    })
}

#[cfg(not(feature = "hub"))]
fn hub_builder(_: &str, _: &Args) -> audiox::Result<audiox::AudioXBuilder> {
    Err(audiox::Error::InvalidRequest(
        "--model needs the `hub` feature (on by default)".into(),
    ))
}

/// Whether the request is longer than one window of the model.
fn long_form_needed(model: &AudioX, args: &Args) -> audiox::Result<bool> {
    let window = model.max_duration();
    Ok(match (args.duration, &args.video) {
        (Some(d), _) => d > window,
        (None, Some(video)) => {
            let length =
                audiox::long_form::video_seconds(&audiox::VideoInput::File(video.clone()))?;
            length - args.start > window
        }
        (None, None) => false,
    })
}

/// Streams a long request to `--out`, window by window, then muxes it under `--video`.
fn run_long(
    model: &AudioX,
    request: Request,
    args: &Args,
    format: WavFormat,
) -> audiox::Result<()> {
    let options = LongFormOptions {
        overlap_seconds: args.overlap,
        crossfade_seconds: args.crossfade,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} window {msg} [{bar:30}] {pos}/{len} steps")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let progress_bar = bar.clone();
    let stream = model.stream(request, options)?.with_progress(move |p| {
        progress_bar.set_length((p.windows * p.steps) as u64);
        progress_bar.set_position((p.window * p.steps + p.step + 1) as u64);
        progress_bar.set_message(format!("{}/{}", p.window + 1, p.windows));
    });
    let (seed, windows) = (stream.seed(), stream.windows());
    let rate = stream.sample_rate();
    let mut wav = WavStream::create(&args.out, rate, stream.channels(), format)?;
    let mut stream = stream;
    let mut frames = 0usize;
    for span in stream.by_ref() {
        let span = span?;
        frames += span.audio.num_frames();
        wav.write(&span.audio)?;
    }
    wav.finish()?;
    bar.finish_and_clear();
    let seconds = frames as f64 / rate as f64;
    println!(
        "wrote {} ({seconds:.2} s, {rate} Hz, {} channels; {windows} windows, streamed)",
        args.out.display(),
        stream.channels()
    );
    println!("seed {seed}");
    println!("timings: {}", stream.timings());
    if let (Some(video), Some(target)) = (&args.video, &args.mux) {
        mux(video, &args.out, target, args.start, seconds)?;
        println!("wrote {}", target.display());
    }
    Ok(())
}

fn parse_mask(s: &str) -> audiox::Result<AudioPromptMask> {
    match s {
        "random" => Ok(AudioPromptMask::Random),
        "keep" => Ok(AudioPromptMask::Keep),
        span => {
            let parsed = span
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)));
            match parsed {
                Some((a, b)) => Ok(AudioPromptMask::Blank(a..b)),
                None => Err(audiox::Error::InvalidRequest(format!(
                    "--audio-mask `{s}`: expected random, keep or START:END seconds"
                ))),
            }
        }
    }
}

fn numbered(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audiox");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("wav");
    path.with_file_name(format!("{stem}_{i}.{ext}"))
}

#[cfg(feature = "video")]
fn mux(video: &Path, wav: &Path, target: &Path, start: f64, seconds: f64) -> audiox::Result<()> {
    audiox_encoders::video_file::Ffmpeg::new().mux_segment(
        video,
        wav,
        target,
        Some((start, seconds)),
    )
}

#[cfg(feature = "video")]
fn check_mux(video: &Path, target: &Path) -> audiox::Result<()> {
    audiox_encoders::video_file::check_mux_target(&[video], target)
}

#[cfg(not(feature = "video"))]
fn check_mux(_: &Path, _: &Path) -> audiox::Result<()> {
    Err(audiox::Error::InvalidRequest(
        "--mux needs the `video` feature".into(),
    ))
}

#[cfg(not(feature = "video"))]
fn mux(_: &Path, _: &Path, _: &Path, _: f64, _: f64) -> audiox::Result<()> {
    Err(audiox::Error::InvalidRequest(
        "--mux needs the `video` feature".into(),
    ))
}
