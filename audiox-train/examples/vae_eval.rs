//! Reconstruction quality of a trained VAE (an `audiox-train` export folder) on held-out
//! corpus clips: median SNR and the instruction-following metric on the reconstructions.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example vae_eval -- runs/demo/export [COUNT]
//! ```

use std::path::PathBuf;

use audiox_core::weights::{Component, StateDict, WeightSource};
use audiox_train::corpus::{Corpus, CorpusConfig};
use audiox_train::train::eval::{reconstruction_report, vae_reconstructor};
use audiox_train::train::vae::vae_config;
use audiox_vae::Vae;
use burn::tensor::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        return Err("usage: vae_eval EXPORT_DIR [COUNT]".into());
    };
    let count: usize = match args.get(1) {
        Some(n) => n.parse().map_err(|e| format!("COUNT {n:?}: {e}"))?,
        None => 20,
    };
    let config = audiox::ModelConfig::from_file(dir.join("config.json"))?;
    let dict = StateDict::open(dir.join("pretransform").join("vae.safetensors"))?;
    let device = Device::flex();
    let (vae, _) = Vae::load(&vae_config(&config), &[WeightSource::new(&dict)], &device)?;
    let corpus = Corpus::new(CorpusConfig {
        sample_rate: config.sample_rate,
        ..CorpusConfig::default()
    })?;
    let report = reconstruction_report(&corpus, count, &mut vae_reconstructor(&vae, &device))?;
    println!(
        "{} held-out clips, median SNR {:.1} dB",
        report.clips, report.median_snr_db
    );
    println!("| audio | clips | count | order | onset | pitch |");
    println!("|---|---|---|---|---|---|");
    println!("{}", report.original.markdown_row("original"));
    println!(
        "{}",
        report.reconstructed.markdown_row("VAE reconstruction")
    );
    Ok(())
}
