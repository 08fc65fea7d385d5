//! GPU bench: the text-only 10 s request of the full-size model, random weights built in
//! memory (no checkpoint file), several runs, per-stage times with the device synchronised at
//! every stage boundary, per-step sampler times, and the device memory pool's high-water mark.
//!
//! ```text
//! cargo run --release -p audiox --features wgpu --example gpu_bench -- --device wgpu
//! cargo run --release -p audiox --features vulkan --example gpu_bench -- --device vulkan --precision f16
//! cargo run --release -p audiox --features wgpu --example gpu_bench -- --device wgpu --tiny   # smoke test
//! ```
//!
//! The stages are the ones [`audiox::AudioX::generate`] runs for a text-only request, built
//! from the same component crates: video (the learned empty feature), text (T5), audio prompt
//! (the silent prompt), fusion (MAF), sampling (the DMD student, 4 steps), decode (VAE), post
//! (read back). Each run is timed twice: once with a sync after every stage and step (the
//! breakdown), once end to end with only the final read-back (the latency a caller sees).
//! Weights are burn's default initialisation, so the audio is noise; timing does not depend on
//! the values. Results go in `docs/performance.md` (GPU section).

use std::process::ExitCode;
use std::time::Instant;

use audiox::ModelConfig;
use audiox::{Precision, StepControl};
use audiox_core::fixtures::fixtures_dir;
use audiox_core::noise::{NoiseSource, SeededNoise, labels};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_core::{Error, Result};
use audiox_encoders::clip::ClipVisionConfig;
use audiox_encoders::conditioners::{
    AudioPromptConditioner, PromptMask, TextConditioner, VideoConditioner,
};
use audiox_encoders::t5::T5Config;
use audiox_encoders::tokenizer::T5Tokenizer;
use audiox_mmdit::{Dit, MafBlock, MmditDenoiser};
use audiox_sampler::{Dmd, Sampler};
use audiox_vae::OobleckDecoder;
use burn::tensor::{Device, Tensor};
use clap::Parser;

const PROMPT: &str = "a wooden door creaks open, then slams shut";

/// Time the full-size text-only request on a device.
#[derive(Parser)]
struct Args {
    /// Compute device: `wgpu`, `vulkan`, `cuda` (with that feature of the audiox crate) or `cpu`.
    #[arg(long, default_value = "wgpu")]
    device: String,
    /// Float precision: `f32`, `f16` or `bf16` (where the device computes in it).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Timed runs after the warm-up run.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The shipped tiny model's sizes instead of the official ones (a quick smoke test).
    #[arg(long)]
    tiny: bool,
}

/// The components of a text-only request.
struct Model {
    config: ModelConfig,
    text: TextConditioner,
    video: VideoConditioner,
    audio: AudioPromptConditioner,
    maf: MafBlock,
    dit: Dit,
    decoder: OobleckDecoder,
    sync_rows: usize,
}

fn build(tiny: bool, device: &Device) -> Result<Model> {
    let bundle = fixtures_dir().join("bundle");
    let (config, t5, clip) = if tiny {
        (
            ModelConfig::from_file(bundle.join("config.json"))?,
            T5Config::from_hf_file(bundle.join("t5-base/config.json"))?,
            ClipVisionConfig::from_hf_file(bundle.join("clip-vit-base-patch32/config.json"))?,
        )
    } else {
        (
            ModelConfig::official(),
            T5Config::t5_base(),
            ClipVisionConfig::vit_b32(),
        )
    };
    let text_config = config
        .text_conditioner()
        .ok_or_else(|| Error::config("model.conditioning.configs", "no text conditioner"))?;
    // The tiny bundle's tokenizer: its ids are valid for both vocabularies.
    let tokenizer = T5Tokenizer::from_file(
        bundle.join("t5-base").join("tokenizer.json"),
        text_config.max_length,
    )?;
    let text = TextConditioner::new(
        tokenizer,
        t5.init(device),
        config.model.conditioning.cond_dim,
    )?;
    let video_config = config
        .video_conditioner()
        .ok_or_else(|| Error::config("model.conditioning.configs", "no video conditioner"))?
        .clone()
        .with_clip(clip);
    let video = video_config.init(device);
    let audio_config = config
        .audio_conditioner()
        .ok_or_else(|| Error::config("model.conditioning.configs", "no audio conditioner"))?
        .clone();
    let audio = AudioPromptConditioner::new(audio_config.init(device), &audio_config);
    let maf = config.maf().init(device);
    let dit = config.dit().init(device)?.without_dead_weights();
    let decoder = config.vae().decoder.init(device);
    Ok(Model {
        config,
        text,
        video,
        audio,
        maf,
        dit,
        decoder,
        sync_rows: video_config.sync_rows,
    })
}

/// Stage names, in order.
const STAGES: [&str; 7] = [
    "video", "text", "audio", "fusion", "sampling", "decode", "post",
];

/// One timed request.
struct Run {
    /// Seconds per stage (zero where not synchronised).
    stages: [f64; 7],
    /// Seconds per sampler step (synchronised runs only).
    steps: Vec<f64>,
    total: f64,
    /// Output samples read back.
    samples: usize,
}

/// The request, mirroring `AudioX::generate` for a text-only prompt. With `synced`, the device
/// is synchronised after every stage and step so that the times are per stage.
fn request(m: &Model, device: &Device, seed: u64, synced: bool, peak: &mut u64) -> Result<Run> {
    let mut sync = |d: &Device| -> Result<()> {
        if synced {
            sync_device(d)?;
            *peak = (*peak).max(reserved(d).unwrap_or(0));
        }
        Ok(())
    };
    let mut stages = [0.0; 7];
    let mut noise = SeededNoise::new(seed);
    let total = Instant::now();
    let shape = [1, m.dit.io_channels(), m.dit.latent_length()];
    let initial = from_vec(noise.normal(labels::INITIAL_NOISE, &shape)?, shape, device)?;

    let t = Instant::now();
    let frames = m.video.frames();
    let size = m.video.image_size();
    let width = m.config.model.conditioning.cond_dim;
    let zeros = Tensor::<5>::zeros([1, frames, 3, size, size], device);
    let sync_features = Tensor::<3>::zeros([1, m.sync_rows, width], device);
    let video = m.video.forward(zeros, sync_features)?;
    sync(device)?;
    stages[0] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (text, _) = m.text.forward(&[PROMPT], device)?;
    sync(device)?;
    stages[1] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let audio = m
        .audio
        .forward_silent(1, &PromptMask::Random, &mut noise, device)?;
    sync(device)?;
    stages[2] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let context = m.maf.forward(text.tokens, video.tokens, audio.tokens)?;
    sync(device)?;
    stages[3] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut steps = Vec::new();
    let latent = {
        let mut last = Instant::now();
        let mut control = StepControl::new().with_progress(|info| {
            if synced {
                let _ = info.x.device().sync();
                steps.push(last.elapsed().as_secs_f64());
                last = Instant::now();
            }
        });
        let denoiser = MmditDenoiser::new(&m.dit, context)?;
        Dmd::new(Dmd::DEFAULT_STEPS).sample(&denoiser, initial, &mut noise, &mut control)?
    };
    sync(device)?;
    stages[4] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let decoded = m.decoder.forward(latent);
    sync(device)?;
    stages[5] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let samples = to_vec(decoded).len();
    stages[6] = t.elapsed().as_secs_f64();
    Ok(Run {
        stages,
        steps,
        total: total.elapsed().as_secs_f64(),
        samples,
    })
}

fn sync_device(device: &Device) -> Result<()> {
    device
        .sync()
        .map_err(|e| Error::InvalidRequest(format!("device sync: {e:?}")))
}

/// The device memory pool's reserved bytes (what the device holds for this process), if the
/// backend reports it.
fn reserved(device: &Device) -> Option<u64> {
    device.memory_pool_usage().map(|u| u.bytes_reserved)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn run(args: Args) -> Result<()> {
    let precision: Precision = args.precision.parse()?;
    let device = audiox::select_device(&args.device, precision)?;
    let started = Instant::now();
    let model = build(args.tiny, &device)?;
    sync_device(&device)?;
    let mut peak = reserved(&device).unwrap_or(0);
    println!(
        "model: {} sizes, random weights, device {} ({precision}); built in {:.2} s; \
         pool reserved {:.2} GiB",
        if args.tiny { "tiny" } else { "official" },
        args.device,
        started.elapsed().as_secs_f64(),
        gib(peak)
    );

    let t = Instant::now();
    let warm = request(&model, &device, 0, false, &mut peak)?;
    println!(
        "warm-up (first use compiles the kernels): {:.2} s, {} samples",
        t.elapsed().as_secs_f64(),
        warm.samples
    );
    peak = peak.max(reserved(&device).unwrap_or(0));

    let mut synced_totals = Vec::new();
    let mut e2e = Vec::new();
    for i in 1..=args.runs {
        let r = request(&model, &device, i as u64, true, &mut peak)?;
        peak = peak.max(reserved(&device).unwrap_or(0));
        let stages: Vec<String> = STAGES
            .iter()
            .zip(r.stages)
            .map(|(n, s)| format!("{n} {:.1} ms", s * 1e3))
            .collect();
        let steps: Vec<String> = r.steps.iter().map(|s| format!("{:.1}", s * 1e3)).collect();
        println!(
            "run {i} (synced): {:.1} ms = {}; {} steps [{}] ms",
            r.total * 1e3,
            stages.join(", "),
            r.steps.len(),
            steps.join(", ")
        );
        synced_totals.push(r.total);
        let r = request(&model, &device, i as u64, false, &mut peak)?;
        peak = peak.max(reserved(&device).unwrap_or(0));
        println!("run {i} (end to end): {:.1} ms", r.total * 1e3);
        e2e.push(r.total);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "REPORT gpu_bench {} {} {precision}: text-only 10 s request, end to end best {:.1} ms, \
         median {:.1} ms (synced breakdown median {:.1} ms); device pool high-water {:.2} GiB{}",
        if args.tiny { "tiny" } else { "full-size" },
        args.device,
        best(&e2e) * 1e3,
        median(&mut e2e.clone()) * 1e3,
        median(&mut synced_totals) * 1e3,
        gib(peak),
        if reserved(&device).is_none() {
            " (not reported by this backend)"
        } else {
            ""
        }
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.runs == 0 {
        eprintln!("error: --runs must be at least 1");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
