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
//! **Half-precision error at full size.** With `--seed N` the random weights come from the
//! device's seeded generator in a fixed order. On the CPU backend burn draws an f16 weight as
//! the f32 draw rounded, so two processes with the same seed hold the same model in f32 and in
//! f16. On the GPU backends burn's random kernels draw in the tensor's own type, and that
//! equality is not verified: there, a `text` row far from cosine 1 means the two processes
//! hold different models and the comparison says nothing.
//! `--dump FILE` writes the warm-up request's stage outputs (text tokens, fused context, latent,
//! decoded audio; f32 safetensors) and `--compare A B` prints the error of B against A:
//!
//! ```text
//! gpu_bench --device wgpu --precision f32 --seed 1 --runs 0 --dump f32.safetensors
//! gpu_bench --device wgpu --precision f16 --seed 1 --runs 0 --dump f16.safetensors
//! gpu_bench --compare f32.safetensors f16.safetensors
//! ```
//!
//! `--device cpu --precision f16` runs burn's CPU backend in f16 (the same device setting as
//! `audiox/tests/half_precision.rs`): slower than f32 there and not offered by `generate`, but it
//! measures what f16 arithmetic does to this model where no GPU is at hand.
//!
//! The stages are the ones [`audiox::AudioX::generate`] runs for a text-only request, built
//! from the same component crates: video (the learned empty feature), text (T5), audio prompt
//! (the silent prompt), fusion (MAF), sampling (the DMD student, 4 steps), decode (VAE), post
//! (read back). Each run is timed twice: once with a sync after every stage and step (the
//! breakdown), once end to end with only the final read-back (the latency a caller sees).
//! Weights are burn's default initialisation, so the audio is noise; timing does not depend on
//! the values. Results go in `docs/performance.md` (GPU section).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use audiox::{Precision, StepControl};
use audiox_core::noise::{NoiseSource, SeededNoise, labels};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_core::{Error, Result};
use audiox_encoders::conditioners::PromptMask;
use audiox_mmdit::MmditDenoiser;
use audiox_sampler::{Dmd, Sampler};
use burn::tensor::{Device, FloatDType, Tensor};
use clap::Parser;

#[path = "common/random_model.rs"]
mod random_model;
use random_model::{Model, build};

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
    /// Seed the device's random generator before the weights are drawn, so that another
    /// process with the same seed (in another precision) holds the same weights.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the warm-up request's stage outputs (f32 safetensors) to this file.
    #[arg(long, value_name = "FILE")]
    dump: Option<PathBuf>,
    /// Compare two `--dump` files (B against A) and exit: no model is built.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with_all = ["dump", "seed"])]
    compare: Option<Vec<PathBuf>>,
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
    /// Stage outputs as f32 (name, shape, values), when asked for.
    outputs: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
}

/// The request, mirroring `AudioX::generate` for a text-only prompt. With `synced`, the device
/// is synchronised after every stage and step so that the times are per stage.
fn request(
    m: &Model,
    device: &Device,
    seed: u64,
    synced: bool,
    keep: bool,
    peak: &mut u64,
) -> Result<Run> {
    let mut outputs = Vec::new();
    let mut keep_output = |name: &'static str, t: &Tensor<3>| {
        if keep {
            outputs.push((name, t.dims().to_vec(), to_vec(t.clone())));
        }
    };
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
    keep_output("text", &text.tokens);
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
    keep_output("context", &context);
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

    keep_output("latent", &latent);
    let t = Instant::now();
    let decoded = m.decoder.forward(latent);
    sync(device)?;
    stages[5] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let dims = decoded.dims().to_vec();
    let audio_out = to_vec(decoded);
    stages[6] = t.elapsed().as_secs_f64();
    let samples = audio_out.len();
    if keep {
        outputs.push(("decoded", dims, audio_out));
    }
    Ok(Run {
        stages,
        steps,
        total: total.elapsed().as_secs_f64(),
        samples,
        outputs,
    })
}

/// Writes stage outputs as f32 safetensors.
fn write_dump(path: &Path, outputs: &[(&'static str, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = outputs
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = outputs
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|view| (name.to_string(), view))
                .map_err(|e| Error::InvalidRequest(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None)
        .map_err(|e| Error::InvalidRequest(format!("{}: {e}", path.display())))?;
    std::fs::write(path, data).map_err(|e| Error::io(path, e))
}

fn parse_dump<'a>(bytes: &'a [u8], path: &Path) -> Result<safetensors::SafeTensors<'a>> {
    safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::InvalidRequest(format!("{}: {e}", path.display())))
}

/// Prints the error of every stage output of `b` against `a` (two `--dump` files).
fn compare(a: &Path, b: &Path) -> Result<()> {
    let read =
        |path: &Path| -> Result<Vec<u8>> { std::fs::read(path).map_err(|e| Error::io(path, e)) };
    let (bytes_a, bytes_b) = (read(a)?, read(b)?);
    let (fa, fb) = (parse_dump(&bytes_a, a)?, parse_dump(&bytes_b, b)?);
    let values = |view: safetensors::tensor::TensorView<'_>| -> Vec<f64> {
        view.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    };
    println!(
        "| stage | relative error | cosine similarity | SNR (dB) | worst error / peak | finite |"
    );
    println!("|---|---|---|---|---|---|");
    for name in ["text", "context", "latent", "decoded"] {
        let (Ok(va), Ok(vb)) = (fa.tensor(name), fb.tensor(name)) else {
            continue;
        };
        if va.shape() != vb.shape() {
            return Err(Error::InvalidRequest(format!(
                "{name}: shapes {:?} and {:?} differ",
                va.shape(),
                vb.shape()
            )));
        }
        let shape = va.shape().to_vec();
        let (x, y) = (values(va), values(vb));
        let finite = y.iter().all(|v| v.is_finite());
        let (mut dot, mut xx, mut yy, mut ee, mut worst, mut peak) =
            (0.0, 0.0, 0.0, 0.0, 0.0f64, 0.0f64);
        for (&r, &g) in x.iter().zip(&y) {
            dot += r * g;
            xx += r * r;
            yy += g * g;
            ee += (g - r) * (g - r);
            worst = worst.max((g - r).abs());
            peak = peak.max(r.abs());
        }
        println!(
            "| {name} {shape:?} | {:.2e} | {:.7} | {:.1} | {:.2} % | {finite} |",
            (ee / xx).sqrt(),
            dot / (xx * yy).sqrt(),
            10.0 * (xx / ee).log10(),
            100.0 * worst / peak
        );
    }
    Ok(())
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
    if let Some(files) = &args.compare {
        return compare(&files[0], &files[1]);
    }
    let precision: Precision = args.precision.parse()?;
    let device = if args.device == "cpu" && precision == Precision::F16 {
        // The CPU backend in f16 (see the module docs): for measuring error, not speed.
        let mut device = Device::flex();
        device
            .configure(FloatDType::F16)
            .map_err(|e| Error::InvalidRequest(format!("the CPU device refused f16: {e:?}")))?;
        device
    } else {
        audiox::select_device(&args.device, precision)?
    };
    if let Some(seed) = args.seed {
        device.seed(seed);
    }
    let started = Instant::now();
    let model = build(!args.tiny, &device)?;
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
    let warm = request(&model, &device, 0, false, args.dump.is_some(), &mut peak)?;
    if let Some(path) = &args.dump {
        write_dump(path, &warm.outputs)?;
        println!(
            "stage outputs of the warm-up request written to {}",
            path.display()
        );
    }
    println!(
        "warm-up (first use compiles the kernels): {:.2} s, {} samples",
        t.elapsed().as_secs_f64(),
        warm.samples
    );
    peak = peak.max(reserved(&device).unwrap_or(0));

    let mut synced_totals = Vec::new();
    let mut e2e = Vec::new();
    for i in 1..=args.runs {
        let r = request(&model, &device, i as u64, true, false, &mut peak)?;
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
        let r = request(&model, &device, i as u64, false, false, &mut peak)?;
        peak = peak.max(reserved(&device).unwrap_or(0));
        println!("run {i} (end to end): {:.1} ms", r.total * 1e3);
        e2e.push(r.total);
    }
    if args.runs == 0 {
        return Ok(());
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
    if args.runs == 0 && args.dump.is_none() && args.compare.is_none() {
        eprintln!("error: --runs must be at least 1 (0 only with --dump)");
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
