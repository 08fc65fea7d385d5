//! Reconstruction quality of a trained VAE (an `audiox-train` export folder) on held-out
//! corpus clips: median SNR, level and correlation, and the instruction-following metric on the
//! reconstructions.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example vae_eval -- runs/demo/export [COUNT] [WAV_DIR] [--energy-window S]
//! ```
//!
//! `--energy-window S` sets the window the detector's onset baseline is measured over
//! (`DetectorConfig::window_s`, default 0.03 s; 0.01 is the detector before 2026-12-05
//! evening, for comparing with ceilings measured then).
//!
//! With `WAV_DIR`, each held-out clip and its reconstruction are also written there
//! (`NN-original.wav`, `NN-reconstruction.wav`, mono 32-bit float) for listening, and
//! `clips.md` lists per clip the caption and the events detected in both (onset, class, pitch,
//! tonality): which events the VAE loses or changes.

use std::path::PathBuf;

use audiox_core::weights::{Component, StateDict, WeightSource};
use audiox_train::corpus::{Corpus, CorpusConfig, write_mono_wav};
use audiox_train::metric::DetectorConfig;
use audiox_train::train::eval::{reconstruction_report_with, vae_reconstructor};
use audiox_train::train::vae::vae_config;
use audiox_vae::Vae;
use burn::tensor::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut detector = DetectorConfig::default();
    if let Some(at) = args.iter().position(|a| a == "--energy-window") {
        let value = args
            .get(at + 1)
            .ok_or("--energy-window needs a value in seconds")?;
        detector.window_s = value
            .parse()
            .map_err(|e| format!("--energy-window {value:?}: {e}"))?;
        args.drain(at..at + 2);
    }
    let Some(dir) = args.first().map(PathBuf::from) else {
        return Err("usage: vae_eval EXPORT_DIR [COUNT] [WAV_DIR] [--energy-window S]".into());
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
    let wav_dir = args.get(2).map(PathBuf::from);
    if let Some(d) = &wav_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut reconstruct = vae_reconstructor(&vae, &device);
    let mut index = 0usize;
    let mut reconstruct_and_write = |samples: &[f32]| {
        let out = reconstruct(samples)?;
        if let Some(d) = &wav_dir {
            for (name, audio) in [("original", samples), ("reconstruction", &out[..])] {
                let path = d.join(format!("{index:02}-{name}.wav"));
                write_mono_wav(&path, config.sample_rate, audio).map_err(|e| {
                    audiox_train::train::TrainError::config(
                        "WAV_DIR",
                        format!("{}: {e}", path.display()),
                    )
                })?;
            }
        }
        index += 1;
        Ok(out)
    };
    let report = reconstruction_report_with(&corpus, count, &detector, &mut reconstruct_and_write)?;
    if let Some(d) = &wav_dir {
        let path = d.join("clips.md");
        std::fs::write(&path, per_clip_markdown(&report))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!(
        "{} held-out clips, median SNR {:.1} dB, median level {:.1} dB of the original's, \
         median correlation {:.3}, median offset {:.5}",
        report.clips,
        report.median_snr_db,
        report.median_level_db,
        report.median_correlation,
        report.median_offset
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

/// Per clip: the caption, then the events found in the original and the reconstruction.
fn per_clip_markdown(report: &audiox_train::train::eval::ReconstructionReport) -> String {
    let events = |found: &[audiox_train::metric::DetectedEvent]| {
        found
            .iter()
            .map(|e| {
                format!(
                    "{:.2} s {:?} {:.0} Hz t{:.2}",
                    e.onset_s, e.class, e.pitch_hz, e.tonality
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut out = String::from(
        "| # | caption | expected | SNR dB | level dB | offset | original | reconstruction |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (i, c) in report.per_clip.iter().enumerate() {
        out += &format!(
            "| {i:02} | {} | {} | {:.1} | {:.1} | {:.5} | {} | {} |\n",
            c.caption,
            c.expected_events,
            c.snr_db,
            c.level_db,
            c.offset,
            events(&c.original),
            events(&c.reconstructed)
        );
    }
    out
}
