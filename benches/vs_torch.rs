//! Side by side: each full-size stage here, then the equivalent PyTorch computation
//! (`benches/torch_baseline.py`: same shapes and operations, random weights, written with
//! torch's public modules), in one invocation, with the ratio.
//!
//! ```text
//! AUDIOX_TORCH_PYTHON=/path/to/python-with-torch cargo bench -p audiox --bench vs_torch
//! AUDIOX_VS_TORCH_STAGES=dit_step,vae_decode ...   # a subset
//! AUDIOX_VS_TORCH_STAGES=request ...               # the whole text-only 10 s request only
//! AUDIOX_PRECISION=f32 ...                         # our side's precision (f32, bf16, int8)
//! AUDIOX_VS_TORCH_TINY=1 AUDIOX_VS_TORCH_STAGES=request ...   # plumbing check, tiny sizes
//! AUDIOX_VS_TORCH_ROUNDS=3 ...                     # each stage 3 times, the sides alternating
//! ```
//!
//! `AUDIOX_VS_TORCH_ROUNDS=N` (default 1) runs each stage N times, ours then PyTorch's in every
//! round, prints a row per round and then the medians: our time, PyTorch's, and the median of
//! the rounds' ratios (each round's two sides minutes apart, so a VM whose speed drifts within
//! the hour moves both sides of a ratio alike).
//!
//! Both sides use the same thread count (`RAYON_NUM_THREADS`, default: all cores). Without
//! `AUDIOX_TORCH_PYTHON` only our side runs. Each side reports the best of two runs after a
//! warm-up run.
//!
//! `request` is a whole text-only 10 s request (default sampler: DMD, 4 steps): ours through the
//! public API (`AudioX::builder()` on the full-size random checkpoint of
//! `common/checkpoint.rs`, written once, ~12 GB on disk; only `generate` is timed, not the
//! load), PyTorch's as the official pipeline computes it (`torch_baseline.py --stage request`).
//! Memory: our side peaks at about the model's size (~11.5 GB); PyTorch's process starts after
//! our model is dropped and holds about as much, so the two never add up. Before starting
//! PyTorch's request the bench checks `MemAvailable` and skips that side (with a message) when
//! it is short.

#[path = "common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use audiox::{ModelConfig, Request, WeightPrecision};
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::precision::convert_module;
use audiox_core::tensor::{from_dyn, from_vec};
use audiox_encoders::clip::{ClipVision, ClipVisionConfig};
use audiox_encoders::t5::{T5Config, T5Encoder};
use burn::tensor::{Int, Tensor};

const STAGES: [&str; 5] = ["matmul", "dit_step", "vae_decode", "vae_encode", "clip"];
const EXTRA: [&str; 5] = [
    "t5",
    "t5_prompt",
    "silent_prompt",
    "dit_step_cached",
    "request",
];

/// Environment variable: our side's precision for every stage (`f32`, `bf16`, `int8`).
const PRECISION_ENV: &str = "AUDIOX_PRECISION";
/// Environment variable: the `request` stage at the tiny fixture bundle's sizes on our side and
/// `--tiny` on PyTorch's (a check of the plumbing; its times mean nothing).
const TINY_ENV: &str = "AUDIOX_VS_TORCH_TINY";
/// Environment variable: how many times each stage runs, the sides alternating (default 1).
const ROUNDS_ENV: &str = "AUDIOX_VS_TORCH_ROUNDS";
/// The prompt of the `request` stage.
const PROMPT: &str = "a wooden door creaks open, then slams shut";
/// Memory PyTorch's full-size `request` needs (its weights are 10.6 GB in f32, plus the
/// decode's activations); below this much `MemAvailable` its side is skipped.
const TORCH_REQUEST_BYTES: u64 = 13_000_000_000;

/// Our side's precision, from `AUDIOX_PRECISION` (default `f32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BenchPrecision {
    F32,
    Bf16,
    Int8,
}

impl BenchPrecision {
    fn from_env() -> Result<Self, String> {
        match std::env::var(PRECISION_ENV) {
            Err(_) => Ok(BenchPrecision::F32),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "f32" => Ok(BenchPrecision::F32),
                "bf16" => Ok(BenchPrecision::Bf16),
                "int8" => Ok(BenchPrecision::Int8),
                other => Err(format!(
                    "{PRECISION_ENV}={other}: expected f32, bf16 or int8"
                )),
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            BenchPrecision::F32 => "f32",
            BenchPrecision::Bf16 => "bf16",
            BenchPrecision::Int8 => "int8",
        }
    }

    /// How our side holds its weights: the builder's option for `request`, the same conversion
    /// of the stage's component otherwise (`WeightPrecision::conditioners` for T5 and CLIP; the
    /// VAE is f32 in every precision).
    fn weights(self) -> WeightPrecision {
        match self {
            BenchPrecision::F32 => WeightPrecision::F32,
            BenchPrecision::Bf16 => WeightPrecision::Bf16,
            BenchPrecision::Int8 => WeightPrecision::Int8,
        }
    }
}

fn tiny() -> bool {
    std::env::var(TINY_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The PyTorch stage each of ours is compared with. Three of ours are the reference's work done
/// our way: `t5_prompt` (a 40-token prompt padded to 128: the reference encodes all 128
/// positions, we encode the real prefix), `silent_prompt` (a request without an audio prompt:
/// the reference runs the VAE encoder on 10 s of zeros, we run a short zero input) and
/// `dit_step_cached` (one sampler step: the reference recomputes the context-only work every
/// step, we prepare it once per request).
fn torch_stage(stage: &str) -> &str {
    match stage {
        "t5_prompt" => "t5",
        "silent_prompt" => "vae_encode",
        "dit_step_cached" => "dit_step",
        other => other,
    }
}

fn seeded<const D: usize>(seed: u64, shape: [usize; D], scale: f32) -> Tensor<D> {
    let v: Vec<f32> = SeededNoise::new(seed)
        .normal("bench", &shape)
        .unwrap()
        .into_iter()
        .map(|x| x * scale)
        .collect();
    from_vec(v, shape, &common::device()).unwrap()
}

/// Best of two timed runs after a warm-up.
fn best_of_two(mut f: impl FnMut()) -> f64 {
    f();
    (0..2)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn ours(stage: &str, precision: WeightPrecision) -> f64 {
    let device = common::device();
    let config = ModelConfig::official();
    match stage {
        "matmul" => {
            let gflops = common::matmul_gflops(&device, 3);
            2.0 * 1024.0 * 2048.0 * 2048.0 / (gflops * 1e9)
        }
        "dit_step" | "dit_step_cached" => {
            // Random init (lazy, burn's initializer): 2.2 B parameters, ~9 GB.
            let dit = config.dit().init(&device).unwrap();
            // Converted one weight at a time (each initialised, then converted).
            let dit = convert_module(dit, precision);
            let x = seeded::<3>(1, [1, 64, 236], 1.0);
            let ctx = seeded::<3>(2, [1, 384, 768], 1.0);
            let t = Tensor::<1>::from_floats([0.5], &device);
            // The reference's step recomputes the context-only work (its unit of work:
            // prepare + forward); our sampler prepares it once per request (cached step).
            let cached = (stage == "dit_step_cached").then(|| dit.prepare(ctx.clone()).unwrap());
            best_of_two(|| {
                let prepared = match &cached {
                    Some(p) => p.clone(),
                    None => dit.prepare(ctx.clone()).unwrap(),
                };
                let _ = dit
                    .forward(x.clone(), t.clone(), &prepared)
                    .unwrap()
                    .into_data();
            })
        }
        "vae_decode" => {
            let dec = config.vae().decoder.init(&device);
            let dec = common::randomize(dec, 3);
            // The kernels in bf16 under either reduced precision, as the builder holds them.
            let dec = convert_module(dec, precision);
            let z = seeded::<3>(4, [1, 64, 236], 1.0);
            best_of_two(|| {
                let _ = dec.forward(z.clone()).into_data();
            })
        }
        "vae_encode" | "silent_prompt" => {
            let enc = config.vae().encoder.init(&device);
            let enc = common::randomize(enc, 5);
            let audio = seeded::<3>(6, [1, 2, 441_000], 0.1);
            best_of_two(|| {
                let encoded = match stage {
                    "silent_prompt" => enc.forward_zeros(441_000, &device),
                    _ => enc.forward(audio.clone()),
                };
                let _ = encoded.into_data();
            })
        }
        "clip" => {
            let clip: ClipVision = common::randomize(ClipVisionConfig::vit_b32().init(&device), 7);
            let clip = convert_module(clip, precision.conditioners());
            let frames = seeded::<4>(8, [50, 3, 224, 224], 1.0);
            best_of_two(|| {
                let _ = clip.forward(frames.clone()).unwrap().into_data();
            })
        }
        "t5" | "t5_prompt" => {
            // What the text conditioner runs; a 40-token prompt for `t5_prompt`.
            let real = if stage == "t5_prompt" { 40 } else { 128 };
            let t5: T5Encoder = common::randomize(T5Config::t5_base().init(&device), 9);
            let t5 = convert_module(t5, precision.conditioners());
            let ids: Vec<i64> = (0..128).map(|i| (i * 251 + 7) % 32_000).collect();
            let ids =
                Tensor::<2, Int>::from_data(burn::tensor::TensorData::new(ids, [1, 128]), &device);
            let mask: Vec<f32> = (0..128).map(|i| if i < real { 1.0 } else { 0.0 }).collect();
            let mask = from_dyn::<2>(mask, &[1, 128], &device).unwrap();
            best_of_two(|| {
                let _ = t5
                    .forward_masked(ids.clone(), mask.clone())
                    .unwrap()
                    .into_data();
            })
        }
        "request" => request(precision),
        other => panic!("unknown stage {other}"),
    }
}

/// Our side of `request`: the model built through the public API (not timed), then a text-only
/// request of the model's full window (10 s at full size), default sampler, timed.
fn request(precision: WeightPrecision) -> f64 {
    let builder = if tiny() {
        audiox::AudioX::builder()
            .checkpoint_dir(audiox_core::fixtures::fixtures_dir().join("bundle"))
    } else {
        let dir = common::checkpoint::checkpoint_dir();
        match common::checkpoint::write_random_checkpoint(&dir) {
            Ok(true) => eprintln!("wrote the random checkpoint to {}", dir.display()),
            Ok(false) => {}
            Err(e) => panic!("writing the random checkpoint to {}: {e}", dir.display()),
        }
        common::checkpoint::builder(&dir)
    };
    let model = builder
        .weights_precision(precision)
        .build()
        .expect("the random checkpoint loads");
    let seconds = model.max_duration();
    best_of_two(|| {
        let out = model
            .generate(Request::text(PROMPT).seed(1).duration(seconds))
            .expect("generation");
        assert!(!out.audio.is_empty(), "no audio generated");
        eprintln!("request stages (audiox): {}", out.timings);
    })
}

/// PyTorch's time for `stage` and the peak resident memory of its process (one stage each).
fn torch(python: &str, stage: &str, threads: usize) -> Option<(f64, Option<f64>)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/torch_baseline.py");
    let out = Command::new(python)
        .args([
            script,
            "--stage",
            stage,
            "--threads",
            &threads.to_string(),
            "--reps",
            "2",
        ])
        .args(tiny().then_some("--tiny"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "torch baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    Some((json["seconds"].as_f64()?, json["peak_rss_gb"].as_f64()))
}

/// Whether `MemAvailable` leaves room for PyTorch's full-size request (says why not).
fn torch_request_fits() -> bool {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    match available.map(|kb| kb * 1024) {
        Some(bytes) if bytes < TORCH_REQUEST_BYTES => {
            eprintln!(
                "torch request skipped: {:.1} GB available, it needs about {:.1} GB \
                 (our process holds {:.2} GB now)",
                bytes as f64 / 1e9,
                TORCH_REQUEST_BYTES as f64 / 1e9,
                common::current_rss_bytes().unwrap_or(0) as f64 / 1e9
            );
            false
        }
        _ => true,
    }
}

/// A peak resident size in GB, or `-` where not measured.
fn gb(gigabytes: Option<f64>) -> String {
    gigabytes.map_or("-".to_string(), |b| format!("{b:.2} GB"))
}

/// The larger of two optional measurements (either where the other is missing).
fn larger(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One table row: our time, PyTorch's (`None`: not run) and their ratio, the peaks.
fn row(
    label: &str,
    ours: f64,
    theirs: Option<f64>,
    our_peak: Option<f64>,
    their_peak: Option<f64>,
) -> String {
    match theirs {
        Some(t) => format!(
            "| {label} | {ours:.3} s | {t:.3} s | {:.2} | {} | {} |",
            ours / t,
            gb(our_peak),
            gb(their_peak)
        ),
        None => format!("| {label} | {ours:.3} s | - | - | {} | - |", gb(our_peak)),
    }
}

/// The median of `values` (the mean of the middle two for an even count; not empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// Resets this process's peak resident size (Linux `clear_refs` 5), so the next
/// [`common::peak_rss_bytes`] covers one stage.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let python = std::env::var("AUDIOX_TORCH_PYTHON").ok();
    let wanted: Vec<String> = match std::env::var("AUDIOX_VS_TORCH_STAGES") {
        Ok(list) => list.split(',').map(str::to_string).collect(),
        Err(_) => STAGES
            .iter()
            .chain(EXTRA.iter())
            .map(|s| s.to_string())
            .collect(),
    };
    if let Some(bad) = wanted
        .iter()
        .find(|s| !STAGES.contains(&s.as_str()) && !EXTRA.contains(&s.as_str()))
    {
        eprintln!(
            "error: unknown stage `{bad}` in AUDIOX_VS_TORCH_STAGES (known: {}, {})",
            STAGES.join(", "),
            EXTRA.join(", ")
        );
        std::process::exit(2);
    }
    let precision = match BenchPrecision::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if tiny() && wanted.iter().any(|s| s != "request") {
        eprintln!(
            "error: {TINY_ENV} applies to the `request` stage only: set AUDIOX_VS_TORCH_STAGES=request"
        );
        std::process::exit(2);
    }
    let rounds = match std::env::var(ROUNDS_ENV) {
        Err(_) => 1,
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                eprintln!("error: {ROUNDS_ENV}={v:?}: expected a whole number of at least 1");
                std::process::exit(2);
            }
        },
    };
    let threads = common::threads();
    println!(
        "{} threads; audiox precision {}{}; torch: {}",
        threads,
        precision.name(),
        if tiny() {
            " (tiny sizes: a plumbing check, not a measurement)"
        } else {
            ""
        },
        python
            .as_deref()
            .unwrap_or("(not run: set AUDIOX_TORCH_PYTHON)")
    );
    println!("| stage | audiox | torch | audiox / torch | peak RSS audiox | peak RSS torch |");
    println!("|---|---|---|---|---|---|");
    for stage in &wanted {
        let mut measured: Vec<(f64, Option<f64>)> = Vec::with_capacity(rounds);
        let (mut our_peak, mut their_peak) = (None::<f64>, None::<f64>);
        for round in 1..=rounds {
            reset_peak_rss();
            let ours = ours(stage, precision.weights());
            let peak = common::peak_rss_bytes().map(|b| b as f64 / 1e9);
            our_peak = larger(our_peak, peak);
            let theirs = python
                .as_deref()
                .filter(|_| stage != "request" || tiny() || torch_request_fits())
                .and_then(|p| torch(p, torch_stage(stage), threads));
            their_peak = larger(their_peak, theirs.and_then(|(_, peak)| peak));
            let label = if rounds > 1 {
                format!("{stage} (round {round})")
            } else {
                stage.clone()
            };
            println!(
                "{}",
                row(
                    &label,
                    ours,
                    theirs.map(|(t, _)| t),
                    peak,
                    theirs.and_then(|(_, p)| p)
                )
            );
            measured.push((ours, theirs.map(|(t, _)| t)));
        }
        if rounds > 1 {
            let ours = median(measured.iter().map(|m| m.0).collect());
            let pairs: Vec<(f64, f64)> = measured
                .iter()
                .filter_map(|&(o, t)| t.map(|t| (o, t)))
                .collect();
            let label = format!("{stage} (median of {rounds})");
            if pairs.len() == measured.len() {
                let theirs = median(pairs.iter().map(|p| p.1).collect());
                let ratio = median(pairs.iter().map(|p| p.0 / p.1).collect());
                println!(
                    "| {label} | {ours:.3} s | {theirs:.3} s | {ratio:.2} (median of the rounds' ratios) | {} | {} |",
                    gb(our_peak),
                    gb(their_peak)
                );
            } else {
                println!("{}", row(&label, ours, None, our_peak, None));
            }
        }
    }
    if let Some(rss) = common::peak_rss_bytes() {
        println!("peak RSS (audiox side): {:.2} GB", rss as f64 / 1e9);
    }
}
