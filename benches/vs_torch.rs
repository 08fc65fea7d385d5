//! Side by side: each full-size stage here, then the equivalent PyTorch computation
//! (`benches/torch_baseline.py`: same shapes and operations, random weights, written with
//! torch's public modules), in one invocation, with the ratio.
//!
//! ```text
//! AUDIOX_TORCH_PYTHON=/path/to/python-with-torch cargo bench -p audiox --bench vs_torch
//! AUDIOX_VS_TORCH_STAGES=dit_step,vae_decode ...   # a subset
//! ```
//!
//! Both sides use the same thread count (`RAYON_NUM_THREADS`, default: all cores). Without
//! `AUDIOX_TORCH_PYTHON` only our side runs. Each side reports the best of two runs after a
//! warm-up run.

#[path = "common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use audiox::ModelConfig;
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_dyn, from_vec};
use audiox_encoders::clip::{ClipVision, ClipVisionConfig};
use audiox_encoders::t5::{T5Config, T5Encoder};
use burn::tensor::{Int, Tensor};

const STAGES: [&str; 5] = ["matmul", "dit_step", "vae_decode", "vae_encode", "clip"];
const EXTRA: [&str; 4] = ["t5", "t5_prompt", "silent_prompt", "dit_step_cached"];

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

fn ours(stage: &str) -> f64 {
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
            let frames = seeded::<4>(8, [50, 3, 224, 224], 1.0);
            best_of_two(|| {
                let _ = clip.forward(frames.clone()).unwrap().into_data();
            })
        }
        "t5" | "t5_prompt" => {
            // What the text conditioner runs; a 40-token prompt for `t5_prompt`.
            let real = if stage == "t5_prompt" { 40 } else { 128 };
            let t5: T5Encoder = common::randomize(T5Config::t5_base().init(&device), 9);
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
        other => panic!("unknown stage {other}"),
    }
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
    let threads = common::threads();
    println!(
        "{} threads; torch: {}",
        threads,
        python
            .as_deref()
            .unwrap_or("(not run: set AUDIOX_TORCH_PYTHON)")
    );
    println!("| stage | audiox | torch | audiox / torch | peak RSS audiox | peak RSS torch |");
    println!("|---|---|---|---|---|---|");
    let gb = |b: Option<f64>| b.map_or("-".to_string(), |b| format!("{b:.2} GB"));
    for stage in &wanted {
        reset_peak_rss();
        let ours = ours(stage);
        let our_peak = common::peak_rss_bytes().map(|b| b as f64 / 1e9);
        let theirs = python
            .as_deref()
            .and_then(|p| torch(p, torch_stage(stage), threads));
        match theirs {
            Some((t, peak)) => println!(
                "| {stage} | {ours:.3} s | {t:.3} s | {:.2} | {} | {} |",
                ours / t,
                gb(our_peak),
                gb(peak)
            ),
            None => println!("| {stage} | {ours:.3} s | - | - | {} | - |", gb(our_peak)),
        }
    }
    if let Some(rss) = common::peak_rss_bytes() {
        println!("peak RSS (audiox side): {:.2} GB", rss as f64 / 1e9);
    }
}
