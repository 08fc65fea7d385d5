//! How much of the event layout a teacher checkpoint's conditioning carries, for a run trained
//! with timeline supervision (`teacher.timeline`, `audiox_train::train::timeline`): for the
//! held-out captions (or, with `--training`, the first training scenes; with
//! `--distinct-training`, the first distinct training captions, drawn like the held-out list so
//! that the two compare like for like), the caption's fused
//! context (silent audio prompt) through `Dit::conditioning_sequence`, then the onset channel
//! of the latent frames read back as events (peaks of at least 0.5, as the timeline's tests
//! count them). The DiT can only place as many events as this tells it; what it renders is the
//! instruction-following metric's business (`instruction_following`).
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example timeline_probe -- \
//!     RUN_DIR STEP [--count 40] [--training | --distinct-training] [--dump FILE]
//! ```
//!
//! `--dump FILE` also writes the conditioning sequence (`[captions, positions, width]`, f32
//! little-endian, the time token's position first) for an analysis of its rank along time
//! across captions (`docs/training.md`, session of 2026-12-03 afternoon).
//!
//! Prints the share of captions whose onset channel holds exactly the caption's number of
//! peaks (of at least 0.5, and of at least half the caption's own highest value), the mean
//! absolute difference in peaks (at 0.5), the channel's mean highest value, and the timeline term against each scene's
//! reference rendering (the jitter of the layout makes part of it irreducible).

use std::path::PathBuf;

use audiox_train::corpus::Scene;
use audiox_train::train::timeline::{CHANNELS, timeline_batch, timeline_loss};
use audiox_train::train::{RunDir, TeacherModel, TeacherStage};
use burn::tensor::Device;

/// Which captions are probed.
#[derive(Clone, Copy, PartialEq)]
enum Captions {
    /// The first held-out captions (each once).
    HeldOut,
    /// The first training scenes (as the clip pool draws them: common captions repeat).
    Training,
    /// The first distinct training captions (each once, like the held-out list).
    DistinctTraining,
}

/// The command line: run folder, step, caption count, which captions, dump file.
type Args = (PathBuf, u64, usize, Captions, Option<PathBuf>);

fn parse() -> Result<Args, String> {
    let usage = "usage: timeline_probe RUN_DIR STEP [--count N] [--training | --distinct-training] [--dump FILE]";
    let mut it = std::env::args().skip(1);
    let dir = PathBuf::from(it.next().ok_or(usage)?);
    let step = it
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("STEP: {e}"))?;
    let (mut count, mut captions, mut dump) = (40usize, Captions::HeldOut, None);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => {
                let v = it.next().ok_or("--count needs a value")?;
                count = v.parse().map_err(|e| format!("--count {v:?}: {e}"))?;
            }
            "--training" => captions = Captions::Training,
            "--distinct-training" => captions = Captions::DistinctTraining,
            "--dump" => dump = Some(PathBuf::from(it.next().ok_or("--dump needs a file")?)),
            _ => return Err(format!("unknown option {a}; {usage}")),
        }
    }
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    Ok((dir, step, count, captions, dump))
}

/// Frames where the onset channel has a local maximum of at least `threshold`.
fn peaks(onset: &[f32], threshold: f32) -> usize {
    (0..onset.len())
        .filter(|&f| {
            onset[f] >= threshold
                && (f == 0 || onset[f] > onset[f - 1])
                && (f + 1 == onset.len() || onset[f] >= onset[f + 1])
        })
        .count()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, step, count, which, dump) = parse()?;
    let run = RunDir::resume(&dir)?;
    let plain = Device::flex();
    let stage = TeacherStage::new(&run, &plain)?;
    let model = TeacherModel::from_checkpoint(&run, step, &plain)?;
    let config = run.config().model_config()?;
    let corpus = audiox_train::corpus::Corpus::new((&run.config().corpus).into())?;
    let scenes: Vec<Scene> = match which {
        Captions::HeldOut => corpus.try_held_out_scenes(count)?,
        Captions::Training => (0..count as u64)
            .map(|i| corpus.training_scene(i))
            .collect(),
        Captions::DistinctTraining => corpus.distinct_training_scenes(count),
    };
    let captions: Vec<String> = scenes.iter().map(Scene::caption).collect();
    let captions: Vec<&str> = captions.iter().map(String::as_str).collect();
    let eps = vec![0.0f32; scenes.len() * stage.silent_prompt().mean.len()];
    let context = model.context_from_captions(
        stage.tokenizer(),
        &captions,
        stage.silent_prompt(),
        &eps,
        &plain,
    )?;
    let sequence = model.dit.conditioning_sequence(context)?;
    let [b, positions, width] = sequence.dims();
    let frames = positions - 1;
    let values = sequence
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    if let Some(path) = &dump {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        println!(
            "conditioning [{b}, {positions}, {width}] written to {}",
            path.display()
        );
    }
    // Counted at 0.5 (the targets' half height) and at half of each caption's own highest
    // value (a channel that has the layout but not yet its scale).
    let (mut exact, mut off, mut exact_rel, mut top) = (0usize, 0usize, 0usize, 0.0f32);
    for (i, scene) in scenes.iter().enumerate() {
        let onset: Vec<f32> = (1..positions)
            .map(|p| values[(i * positions + p) * width])
            .collect();
        let max = onset.iter().fold(f32::MIN, |m, &v| m.max(v));
        top += max;
        let asked = scene.expected_events().len();
        let found = peaks(&onset, 0.5);
        exact += usize::from(found == asked);
        off += found.abs_diff(asked);
        exact_rel += usize::from(peaks(&onset, 0.5 * max) == asked);
    }
    // The term against each scene's reference rendering (as the trainer computes it).
    let clips: Vec<_> = scenes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if which == Captions::Training {
                corpus.training_clip(i as u64)
            } else {
                // A rendering of the scene (the held-out rendering stream renders any scene).
                corpus.held_out_clip(s, i as u64)
            }
        })
        .collect();
    let events: Vec<&[_]> = clips.iter().map(|c| c.events.as_slice()).collect();
    let frame_s = config.sample_size as f32 / config.sample_rate as f32 / frames as f32;
    let targets = timeline_batch(&events, frames, frame_s, &plain);
    let term = timeline_loss(sequence, targets)?.into_scalar::<f32>();
    println!(
        "{} step {step}, {b} {} captions: onset channel (of {CHANNELS} supervised) with the caption's \
         count of peaks {:.1} % (at half its own height: {:.1} %), mean |peaks - count| {:.2}, \
         mean highest value {:.2}, timeline term {term:.4}",
        dir.display(),
        match which {
            Captions::HeldOut => "held-out",
            Captions::Training => "training",
            Captions::DistinctTraining => "distinct training",
        },
        100.0 * exact as f64 / b as f64,
        100.0 * exact_rel as f64 / b as f64,
        off as f64 / b as f64,
        top / b as f32,
    );
    Ok(())
}
