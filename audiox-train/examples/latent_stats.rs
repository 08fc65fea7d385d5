//! Statistics of the latents the teacher will train on: the newest VAE checkpoint of a run
//! folder (read only) encodes training clips, and the posterior mean's RMS and standard
//! deviation and the posterior's mean standard deviation are printed. The flow's noise has
//! unit variance; latents far from unit scale skew its signal-to-noise schedule.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example latent_stats -- runs/demo [CLIPS]
//! ```

use std::path::PathBuf;

use audiox_train::corpus::{Corpus, CorpusConfig};
use audiox_train::train::checkpoint::Checkpoints;
use audiox_train::train::vae::vae_config;
use audiox_vae::Posterior;
use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::{Device, Tensor, TensorData};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .map(PathBuf::from)
        .ok_or("usage: latent_stats RUN_DIR [CLIPS]")?;
    let clips: u64 = match args.get(1) {
        Some(n) => n.parse().map_err(|e| format!("CLIPS {n:?}: {e}"))?,
        None => 16,
    };
    // Only the model and corpus parts of run.json are read (any stage set).
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json"))?)?;
    let model = audiox::ModelConfig::from_json_value(&run["model"])?;
    let corpus = Corpus::new(CorpusConfig {
        sample_rate: model.sample_rate,
        duration_s: run["corpus"]["duration_s"].as_f64().unwrap_or(10.0) as f32,
        seed: run["corpus"]["seed"].as_u64().unwrap_or(0),
        held_out_every: run["corpus"]["held_out_every"].as_u64().unwrap_or(10),
        timing_jitter: run["corpus"]["timing_jitter"].as_f64().unwrap_or(1.0) as f32,
    })?;
    let checkpoints = Checkpoints::new(&dir.join("vae"));
    let step = *checkpoints
        .steps()?
        .last()
        .ok_or("the run has no VAE checkpoint")?;
    let device = Device::flex().autodiff();
    let vae = vae_config(&model).init(&device);
    let vae = checkpoints
        .load(step, vae, AdamConfig::new().init())?
        .model
        .valid();
    let plain = Device::flex();
    let (mut sum2, mut sum, mut std_sum, mut n) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for i in 0..clips {
        let clip = corpus.training_clip(i);
        let s = clip.samples.len().min(model.sample_size);
        let mut audio = clip.samples[..s].to_vec();
        audio.extend_from_slice(&clip.samples[..s]);
        let x = Tensor::<3>::from_data(TensorData::new(audio, [1, 2, s]), &plain);
        let posterior = Posterior::from_encoder_output(vae.encoder.forward(x));
        let mean: Vec<f32> = posterior.mean.clone().into_data().try_into_vec()?;
        let stdev: Vec<f32> = posterior.stdev().into_data().try_into_vec()?;
        for (m, d) in mean.iter().zip(&stdev) {
            sum += *m as f64;
            sum2 += (*m as f64) * (*m as f64);
            std_sum += *d as f64;
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    let rms = (sum2 / n).sqrt();
    let std = (sum2 / n - (sum / n).powi(2)).max(0.0).sqrt();
    println!(
        "VAE step {step}, {clips} clips: posterior mean RMS {rms:.3}, std {std:.3}, mean {:.3}; posterior stdev mean {:.4}",
        sum / n,
        std_sum / n
    );
    Ok(())
}
