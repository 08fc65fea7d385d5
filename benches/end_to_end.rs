//! End-to-end generation: a text-only request through the public API.
//!
//! * Always: the tiny fixture bundle (`fixtures/tiny/bundle`) through `AudioX::builder()`,
//!   timed by criterion (the pipeline's fixed costs: tokenizer, caches, sampler, decode).
//! * With `AUDIOX_BENCH_FULL=1`: a **full-size** random-weight checkpoint in the official
//!   key space (every name and shape of `fixtures/manifest/*.json`, f32 safetensors) is written
//!   once to `AUDIOX_BENCH_CHECKPOINT` (default `target/audiox-random-checkpoint`, about
//!   12 GB; reused while its `complete` marker is there), loaded through the builder, and a
//!   10 s text-only request is generated twice. Printed: load time, per-stage timings, resident
//!   memory after loading and at peak, and the matmul roofline of the same run.
//!
//! ```text
//! cargo bench -p audiox --bench end_to_end                       # tiny, criterion
//! AUDIOX_BENCH_FULL=1 cargo bench -p audiox --bench end_to_end   # + full size (minutes)
//! ```

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use audiox::{AudioX, Request};
use audiox_core::fixtures::{fixtures_dir, manifest_dir, official_config_path};
use criterion::Criterion;
use rayon::prelude::*;

type BenchError = Box<dyn std::error::Error>;

const PROMPT: &str = "a wooden door creaks open, then slams shut";

fn main() {
    let mut criterion = Criterion::default().configure_from_args().sample_size(10);
    tiny(&mut criterion);
    criterion.final_summary();
    if common::full_size() {
        if let Err(e) = full_size() {
            eprintln!("full-size end-to-end bench failed: {e}");
            std::process::exit(1);
        }
    } else {
        println!(
            "(full-size end-to-end skipped: set {}=1)",
            common::FULL_SIZE_ENV
        );
    }
}

fn tiny(c: &mut Criterion) {
    let bundle = fixtures_dir().join("bundle");
    let model = AudioX::builder()
        .checkpoint_dir(&bundle)
        .build()
        .expect("the vendored tiny bundle loads");
    let seconds = model.max_duration();
    c.bench_function("end_to_end/tiny_bundle/text_only", |b| {
        b.iter(|| {
            model
                .generate(Request::text(PROMPT).seed(1).duration(seconds))
                .expect("tiny generation")
        })
    });
}

fn full_size() -> Result<(), BenchError> {
    let device = common::device();
    let roofline = common::matmul_gflops(&device, 5);
    println!(
        "matmul roofline: {roofline:.1} GFLOP/s ({} threads)",
        common::threads()
    );

    let dir = std::env::var_os("AUDIOX_BENCH_CHECKPOINT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            audiox_core::fixtures::repo_root()
                .join("target")
                .join("audiox-random-checkpoint")
        });
    let written = Instant::now();
    if write_random_checkpoint(&dir)? {
        println!(
            "wrote a full-size random checkpoint to {} in {:.1} s",
            dir.display(),
            written.elapsed().as_secs_f64()
        );
    } else {
        println!("reusing the random checkpoint in {}", dir.display());
    }

    let rss_before = current_rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let model = AudioX::builder()
        .config(dir.join("config.json"))
        .student_checkpoint(dir.join("audiox_turbo.safetensors"))
        .vae_checkpoint(dir.join("vae.safetensors"))
        .t5_dir(dir.join("t5-base"))
        .clip_dir(dir.join("clip-vit-base-patch32"))
        .build()?;
    let load_s = started.elapsed().as_secs_f64();
    let rss_loaded = current_rss_bytes().unwrap_or(0);
    let held = rss_loaded.saturating_sub(rss_before);
    println!(
        "load: {load_s:.1} s, {}; resident after load {:.2} GB ({:.2} GB more than before)",
        model.load_report().summary(),
        gb(rss_loaded),
        gb(held)
    );

    for run in 1..=2 {
        let t = Instant::now();
        let mut steps = Vec::new();
        let mut last = Instant::now();
        let out = {
            let mut control = audiox::StepControl::new().with_progress(|_info| {
                steps.push(last.elapsed().as_secs_f64());
                last = Instant::now();
            });
            model.generate_with(Request::text(PROMPT).seed(run), &mut control)?
        };
        let wall = t.elapsed().as_secs_f64();
        // The first interval runs from the request's start to the end of the first step.
        let steps: Vec<String> = steps.iter().map(|s| format!("{s:.2}")).collect();
        println!(
            "  time to each sampler step's end (s): [{}]",
            steps.join(", ")
        );
        println!(
            "REPORT end_to_end text-only 10 s (run {run}): {wall:.2} s wall; {}",
            out.timings
        );
        let peak = common::peak_rss_bytes().unwrap_or(0);
        println!(
            "  peak resident {:.2} GB = {:.3}x the resident size after load ({:.2} GB)",
            gb(peak),
            peak as f64 / rss_loaded.max(1) as f64,
            gb(rss_loaded)
        );
    }
    Ok(())
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// Current resident set size (Linux `VmRSS`).
fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Writes the official-size random checkpoint into `dir` unless its marker says its weights
/// are complete (the small configuration files are rewritten every time). Returns whether
/// weights were written.
fn write_random_checkpoint(dir: &Path) -> Result<bool, BenchError> {
    std::fs::create_dir_all(dir.join("t5-base"))?;
    std::fs::create_dir_all(dir.join("clip-vit-base-patch32"))?;
    write_configs(dir)?;
    let marker = dir.join("complete");
    if marker.exists() {
        return Ok(false);
    }
    let manifests = manifest_dir();
    // The whole student wrapper (DiT, MAF, conditioners with their CLIP and VAE copies, VAE).
    write_random_safetensors(
        &read_manifest(&manifests.join("mmdit.json"))?,
        &dir.join("audiox_turbo.safetensors"),
    )?;
    write_random_safetensors(
        &read_manifest(&manifests.join("vae.json"))?,
        &dir.join("vae.safetensors"),
    )?;
    write_random_safetensors(
        &read_manifest(&manifests.join("t5_base.json"))?,
        &dir.join("t5-base").join("model.safetensors"),
    )?;
    write_random_safetensors(
        &read_manifest(&manifests.join("clip_vit_b32.json"))?,
        &dir.join("clip-vit-base-patch32").join("model.safetensors"),
    )?;
    std::fs::write(&marker, "random weights, seeded by tensor name\n")?;
    Ok(true)
}

/// The model config and the HF folder configs of a full-size checkpoint directory.
fn write_configs(dir: &Path) -> Result<(), BenchError> {
    // Configurations: the official model config and the public t5-base / CLIP B/32 sizes on
    // top of the tiny bundle's files (same fields, tiny values).
    std::fs::copy(official_config_path(), dir.join("config.json"))?;
    let bundle = fixtures_dir().join("bundle");
    std::fs::copy(
        bundle.join("t5-base").join("tokenizer.json"),
        dir.join("t5-base").join("tokenizer.json"),
    )?;
    let mut t5: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        bundle.join("t5-base").join("config.json"),
    )?)?;
    for (key, value) in [
        ("d_model", 768),
        ("d_kv", 64),
        ("d_ff", 3072),
        ("num_heads", 12),
        ("num_layers", 12),
        ("num_decoder_layers", 12),
        ("vocab_size", 32128),
    ] {
        t5[key] = value.into();
    }
    std::fs::write(
        dir.join("t5-base").join("config.json"),
        serde_json::to_string_pretty(&t5)?,
    )?;
    let mut clip: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        bundle.join("clip-vit-base-patch32").join("config.json"),
    )?)?;
    for (key, value) in [
        ("hidden_size", 768),
        ("intermediate_size", 3072),
        ("num_attention_heads", 12),
        ("num_hidden_layers", 12),
        ("image_size", 224),
        ("patch_size", 32),
        ("projection_dim", 512),
    ] {
        clip["vision_config"][key] = value.into();
    }
    clip["projection_dim"] = 512.into();
    std::fs::write(
        dir.join("clip-vit-base-patch32").join("config.json"),
        serde_json::to_string_pretty(&clip)?,
    )?;
    Ok(())
}

/// `name -> shape` from a manifest (`{name: [[shape], dtype]}`), in file order.
fn read_manifest(path: &Path) -> Result<Vec<(String, Vec<usize>)>, BenchError> {
    let text = std::fs::read_to_string(path)?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)?;
    let mut out = Vec::with_capacity(map.len());
    for (name, entry) in map {
        let shape: Vec<usize> = serde_json::from_value(entry[0].clone())?;
        out.push((name, shape));
    }
    Ok(out)
}

/// Streams an f32 safetensors file tensor by tensor (never more than one tensor in memory),
/// with uniform values in `+-1/sqrt(fan_in)` (`fan_in` = elements / first dimension) drawn
/// from a counter-based generator keyed by the tensor name.
fn write_random_safetensors(
    tensors: &[(String, Vec<usize>)],
    path: &Path,
) -> Result<(), BenchError> {
    let mut header = BTreeMap::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = 4 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_string(&header)?.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut file = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(path)?);
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(&header)?;
    // Data in the offsets' order, which is the header's (sorted) key order.
    let by_name: BTreeMap<&String, &Vec<usize>> = tensors.iter().map(|(n, s)| (n, s)).collect();
    for (name, shape) in by_name {
        let n: usize = shape.iter().product();
        let fan_in = (n / shape.first().copied().unwrap_or(1).max(1)).max(1);
        let scale = 1.0 / (fan_in as f32).sqrt();
        let key = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let mut bytes = vec![0u8; 4 * n];
        bytes
            .par_chunks_mut(4 << 16)
            .enumerate()
            .for_each(|(chunk, out)| {
                for (i, v) in out.chunks_exact_mut(4).enumerate() {
                    let x = splitmix64(key ^ ((chunk << 16) + i) as u64);
                    let u = (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                    v.copy_from_slice(&(u * scale).to_le_bytes());
                }
            });
        file.write_all(&bytes)?;
    }
    file.flush()?;
    Ok(())
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
