//! Synchformer visual extractor: the tiny fixture model always (divan), and the full-size
//! extractor with random weights behind `AUDIOX_BENCH_FULL=1` (manual timing).
//!
//! A 10 s request runs 30 segments (250 frames at 25 fps), about 11.8 TFLOP: many minutes on a
//! 2-core machine. The full-size bench therefore times `AUDIOX_BENCH_SYNC_SEGMENTS` segments
//! (default 2, all in one batch as in a request) and scales the time to 30 segments; segments
//! are independent batch items, so the cost is linear in their number. See
//! docs/performance.md.

#[path = "common/mod.rs"]
mod common;

use audiox_core::fixtures::FixtureSet;
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::from_dyn;
use audiox_core::weights::{Component, WeightSource};
use audiox_encoders::parity::synchformer::synchformer_config;
use audiox_encoders::synchformer::{Synchformer, SynchformerConfig, WEIGHT_PREFIX};
use divan::Bencher;

/// Segments of a 10 s request.
const REQUEST_SEGMENTS: usize = 30;

/// Multiply-accumulates of one segment. `executed`: what this implementation computes (the
/// aggregation layer only for its class token); otherwise what the reference computes (the
/// whole aggregation layer).
fn segment_macs(c: &SynchformerConfig, executed: bool) -> f64 {
    let (d, t, n) = (
        c.embed_dim as f64,
        c.time_slots() as f64,
        c.patches_per_frame() as f64,
    );
    let hidden = c.mlp_ratio as f64 * d;
    let tokens = 1.0 + t * n;
    let k = (3 * c.tubelet * c.patch_size * c.patch_size) as f64;
    let embed = t * n * k * d;
    // Per block: two attentions (qkv 3D^2 + proj D^2 per token), the MLP, and the attention
    // products (class query over all keys; patches over 1 + t or 1 + n keys; QK^T and AV).
    let projections = tokens * (2.0 * 4.0 * d * d + 2.0 * d * hidden);
    let products = 2.0 * d * (2.0 * tokens + t * n * (1.0 + t) + t * n * (1.0 + n));
    let blocks = c.depth as f64 * (projections + products);
    let rows = t * (1.0 + n);
    let aggregation = if executed {
        // Keys and values of every row; query, output projection and MLP of the class rows.
        rows * 2.0 * d * d + t * (2.0 * d * d + 2.0 * d * hidden) + 2.0 * rows * d
    } else {
        rows * (4.0 * d * d + 2.0 * d * hidden) + 2.0 * t * (1.0 + n) * (1.0 + n) * d
    };
    embed + blocks + aggregation
}

fn main() {
    divan::main();
    full_size();
}

#[divan::bench(sample_count = 20)]
fn synchformer_tiny(bencher: Bencher) {
    let device = common::device();
    let set = FixtureSet::open_default().expect("fixture set");
    let fx = set.fixture("synchformer").expect("synchformer fixture");
    let config = synchformer_config(&fx).unwrap();
    let (model, _) = Synchformer::load(
        &config,
        &[WeightSource::with_prefix(fx.weights(), WEIGHT_PREFIX)],
        &device,
    )
    .unwrap();
    let frames = fx.f32("in.frames").unwrap();
    let frames = from_dyn::<5>(frames.values, &frames.shape, &device).unwrap();
    bencher.bench_local(|| {
        let out = model.forward(frames.clone()).unwrap();
        common::sync(&device);
        out
    });
}

fn full_size() {
    if !common::full_size() {
        println!(
            "full-size Synchformer skipped (set {}=1)",
            common::FULL_SIZE_ENV
        );
        return;
    }
    let segments: usize = std::env::var("AUDIOX_BENCH_SYNC_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(2);
    let device = common::device();
    let config = SynchformerConfig::full_size();
    let model: Synchformer = common::randomize(config.init(&device).unwrap(), 3);
    let frames = config.segment + (segments - 1) * config.stride;
    let shape = [1, frames, 3, config.image_size, config.image_size];
    let values = SeededNoise::new(4).normal("frames", &shape).unwrap();
    let values: Vec<f32> = values.into_iter().map(|x| x.clamp(-1.0, 1.0)).collect();
    let input = from_dyn::<5>(values, &shape, &device).unwrap();

    let executed = segment_macs(&config, true) * 2.0;
    let reference = segment_macs(&config, false) * 2.0;
    let roofline = common::matmul_gflops(&device, 5);
    println!(
        "matmul roofline: {roofline:.1} GFLOP/s; per segment {:.1} GFLOP executed ({:.1} GFLOP as \
         the reference computes it); {REQUEST_SEGMENTS} segments = {:.2} TFLOP (reference {:.2})",
        executed / 1e9,
        reference / 1e9,
        executed * REQUEST_SEGMENTS as f64 / 1e12,
        reference * REQUEST_SEGMENTS as f64 / 1e12,
    );
    for run in 0..2 {
        let secs = common::time_once(0, || {
            let out = model.forward(input.clone()).unwrap();
            let _ = out.into_data();
        });
        common::report(
            &format!("synchformer_full (run {run}, {segments} segments, {frames} frames)"),
            secs,
            executed * segments as f64,
            roofline,
        );
        println!(
            "  -> scaled to {REQUEST_SEGMENTS} segments (a 10 s request): {:.1} s",
            secs * REQUEST_SEGMENTS as f64 / segments as f64
        );
    }
    if let Some(rss) = common::peak_rss_bytes() {
        println!("peak RSS: {:.2} GB", rss as f64 / 1e9);
    }
}
