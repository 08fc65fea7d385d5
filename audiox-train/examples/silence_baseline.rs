//! The VAE stage's STFT loss that an all-zero output gets on a run's own training batches: the
//! level a decoder collapsed to silence sits at, to read a run's `loss.jsonl` against.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example silence_baseline -- runs/demo [STEPS]
//! ```
//!
//! Prints the median over a sample of the first `STEPS` (default 1,000) steps' batches.

use std::path::PathBuf;

use audiox_train::train::{RunDir, VaeStage};
use burn::tensor::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        return Err("usage: silence_baseline RUN_DIR [STEPS]".into());
    };
    let steps: u64 = match args.get(1) {
        Some(n) => n.parse().map_err(|e| format!("STEPS {n:?}: {e}"))?,
        None => 1_000,
    };
    let run = RunDir::resume(&dir)?;
    let config = run.config();
    let stage = VaeStage::new(config, &Device::flex())?;
    let mut values: Vec<f64> = (0..steps)
        .step_by((steps as usize / 40).max(1))
        .map(|step| stage.silence_stft_loss(step))
        .collect();
    values.sort_by(f64::total_cmp);
    println!(
        "{}: silence's STFT loss on {} batches of the first {steps} steps: median {:.4} (min {:.4}, max {:.4})",
        dir.display(),
        values.len(),
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    );
    Ok(())
}
