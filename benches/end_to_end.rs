//! End-to-end generation: a text-only request through the public API.
//!
//! * Always: the tiny fixture bundle (`fixtures/tiny/bundle`) through `AudioX::builder()`,
//!   timed by divan (the pipeline's fixed costs: tokenizer, caches, sampler, decode).
//! * With `AUDIOX_BENCH_FULL=1`: a **full-size** random-weight checkpoint in the official
//!   key space (every name and shape of `fixtures/manifest/*.json`, f32 safetensors) is written
//!   once to `AUDIOX_BENCH_CHECKPOINT` (default `target/audiox-random-checkpoint`, about
//!   12 GB; reused while its `complete` marker is there), loaded through the builder, and a
//!   10 s text-only request is generated twice. Printed: load time, per-stage timings, resident
//!   memory after loading and at peak, and the matmul roofline of the same run.
//!
//! ```text
//! cargo bench -p audiox --bench end_to_end                       # tiny, divan
//! AUDIOX_BENCH_FULL=1 cargo bench -p audiox --bench end_to_end   # + full size (minutes)
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use audiox::{AudioX, Request};
use audiox_core::fixtures::fixtures_dir;
use common::checkpoint::{self, BenchError};
use divan::Bencher;

const PROMPT: &str = "a wooden door creaks open, then slams shut";

fn main() {
    divan::main();
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

#[divan::bench(sample_count = 10)]
fn tiny_bundle_text_only(bencher: Bencher) {
    let bundle = fixtures_dir().join("bundle");
    let model = AudioX::builder()
        .checkpoint_dir(&bundle)
        .build()
        .expect("the vendored tiny bundle loads");
    let seconds = model.max_duration();
    bencher.bench_local(|| {
        model
            .generate(Request::text(PROMPT).seed(1).duration(seconds))
            .expect("tiny generation")
    });
}

fn full_size() -> Result<(), BenchError> {
    let device = common::device();
    let roofline = common::matmul_gflops(&device, 5);
    println!(
        "matmul roofline: {roofline:.1} GFLOP/s ({} threads)",
        common::threads()
    );

    let dir = checkpoint::checkpoint_dir();
    let written = Instant::now();
    if checkpoint::write_random_checkpoint(&dir)? {
        println!(
            "wrote a full-size random checkpoint to {} in {:.1} s",
            dir.display(),
            written.elapsed().as_secs_f64()
        );
    } else {
        println!("reusing the random checkpoint in {}", dir.display());
    }

    let rss_before = common::current_rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let model = checkpoint::builder(&dir).build()?;
    let load_s = started.elapsed().as_secs_f64();
    let rss_loaded = common::current_rss_bytes().unwrap_or(0);
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
