//! Generate audio from text, video, an image and/or an audio prompt.
//!
//! ```text
//! cargo run --release --example generate -- --prompt "a dog barks twice, then a car passes"
//! cargo run --release --example generate -- --checkpoint-dir checkpoints \
//!     --prompt "waves crash on a rocky beach" --video beach.mp4 --mux beach_with_sound.mp4
//! ```
//!
//! Without `--checkpoint-dir` the program runs the small random-weight model shipped in the
//! repository (`fixtures/tiny/bundle`): it exercises the whole pipeline, but its sound is not
//! meaningful. `docs/weights.md` explains how to get the official weights.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audiox::{
    Audio, AudioPrompt, AudioPromptMask, AudioX, ImageScaling, Request, StepControl, StillImage,
    WavFormat,
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
    /// Checkpoint folder in the official layout (see docs/weights.md). Without it, the small
    /// random-weight model of the repository is used.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Use the teacher checkpoint (`pretrained_ckpt/pretrained_ckpt.ckpt` of the folder, or this
    /// file) as the denoiser.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
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
    /// Sampler steps (default: 4 for the student, 250 for the teacher).
    #[arg(long)]
    steps: Option<usize>,
    /// Sampler: dmd, euler, heun, dpmpp-2m (default: dmd for the student, euler for the teacher).
    #[arg(long)]
    sampler: Option<String>,
    /// Classifier-free guidance scale (needs a guided sampler).
    #[arg(long)]
    cfg: Option<f32>,
    /// Negative prompt (the unconditional branch of guidance).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Number of variations to generate.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Seconds of audio to keep (at most the model's 10 s).
    #[arg(long)]
    duration: Option<f64>,
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
    /// Float precision on a GPU device: `f32`, `f16` or `bf16` (where the device computes in
    /// it; the CPU device is f32).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Output WAV file (`_N` is added before the extension for several samples).
    #[arg(long, short, default_value = "audiox.wav")]
    out: PathBuf,
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
    let dir = match &args.checkpoint_dir {
        Some(dir) => dir.clone(),
        None => {
            eprintln!("==================================================================");
            eprintln!(" No --checkpoint-dir: running the small model shipped in the repo.");
            eprintln!(" Its weights are RANDOM: the output exercises the whole pipeline");
            eprintln!(" but is not meaningful sound. See docs/weights.md for the real one.");
            eprintln!("==================================================================");
            shipped_bundle()
        }
    };
    let mut builder = AudioX::builder()
        .checkpoint_dir(&dir)
        .device(audiox::select_device(
            &args.device,
            args.precision.parse()?,
        )?);
    if let Some(teacher) = &args.teacher {
        let path = if teacher.as_os_str().is_empty() {
            dir.join("pretrained_ckpt/pretrained_ckpt.ckpt")
        } else {
            teacher.clone()
        };
        builder = builder.teacher_checkpoint(path);
    }
    let loading = std::time::Instant::now();
    let model = builder.build()?;
    eprintln!(
        "loaded {:?} model in {:.1} s ({}; {} threads)",
        model.kind(),
        loading.elapsed().as_secs_f64(),
        model.load_report().summary(),
        rayon::current_num_threads()
    );

    let mut request = Request::text(args.prompt.clone()).num_samples(args.num_samples);
    if let Some(seed) = args.seed {
        request = request.seed(seed);
    }
    if let Some(steps) = args.steps {
        request = request.steps(steps);
    }
    if let Some(name) = &args.sampler {
        request = request.sampler_named(name.clone());
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
    if let Some(video) = &args.video {
        request = request.video_file(video.clone()).video_start(args.start);
    }
    if let Some(image) = &args.image {
        request = request.image(StillImage::open(image)?).image_scaling(
            if args.reference_image_scaling {
                ImageScaling::Reference
            } else {
                ImageScaling::LikeVideo
            },
        );
    }
    if let Some(path) = &args.audio_prompt {
        let mut prompt = AudioPrompt::new(Audio::read(path)?);
        prompt.start_seconds = args.start;
        prompt.mask = parse_mask(&args.audio_mask)?;
        request = request.audio_prompt(prompt);
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

    let format = if args.pcm16 {
        WavFormat::Pcm16
    } else {
        WavFormat::Float32
    };
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

#[cfg(not(feature = "video"))]
fn mux(_: &Path, _: &Path, _: &Path, _: f64, _: f64) -> audiox::Result<()> {
    Err(audiox::Error::InvalidRequest(
        "--mux needs the `video` feature".into(),
    ))
}
