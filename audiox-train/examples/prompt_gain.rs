//! Does a teacher checkpoint use its audio prompt? For clips it never trained on, the clean
//! latent is noised to a time `t` and the teacher predicts it back (`x0 = z_t - t v`) twice:
//! with the silent prompt, and with the clip itself as its prompt, its first `--keep` share
//! kept and the rest blank (the continuation form; built as the trainer builds it,
//! `audiox_train::train::masked_prompt`). A teacher that continues its prompt predicts the kept
//! frames better with the prompt than without; one that ignores it, the same.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example prompt_gain -- \
//!     RUN_DIR STEP [--clips 32] [--keep 0.25]
//! ```
//!
//! `RUN_DIR` is a run folder (or a copy holding the checkpoint: nothing is written to it but
//! the latent cache's in-memory entries). The clips are training-stream clips from index
//! 1,000,000 on, far past any clip pool. Prints, per time, the mean squared error of the
//! predicted clean latent in the kept and in the blank frames, and the kept frames' error
//! ratio (prompted / silent: below 1 when the prompt helps).

use std::path::PathBuf;

use audiox_train::train::flow::normals;
use audiox_train::train::{RunDir, TeacherModel, TeacherStage, masked_prompt};
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

fn parse() -> Result<(PathBuf, u64, usize, f64), String> {
    let usage = "usage: prompt_gain RUN_DIR STEP [--clips N] [--keep SHARE]";
    let mut it = std::env::args().skip(1);
    let dir = PathBuf::from(it.next().ok_or(usage)?);
    let step = it
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("STEP: {e}"))?;
    let (mut clips, mut keep) = (32usize, 0.25f64);
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--clips" => clips = v.parse().map_err(|e| format!("--clips {v:?}: {e}"))?,
            "--keep" => keep = v.parse().map_err(|e| format!("--keep {v:?}: {e}"))?,
            _ => return Err(format!("unknown option {a}; {usage}")),
        }
    }
    if clips == 0 || !(keep > 0.0 && keep < 1.0) {
        return Err("--clips must be at least 1 and --keep within (0, 1)".into());
    }
    Ok((dir, step, clips, keep))
}

fn mse(a: &[f32], b: &[f32], frames: usize, range: std::ops::Range<usize>) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if range.contains(&(i % frames)) {
            sum += f64::from(x - y).powi(2);
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

fn values(t: Tensor<3>) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    Ok(t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, step, clips, keep) = parse()?;
    let run = RunDir::resume(&dir)?;
    let plain = Device::flex();
    let stage = TeacherStage::new(&run, &plain)?;
    let model = TeacherModel::from_checkpoint(&run, step, &plain)?;
    let indices: Vec<u64> = (0..clips as u64).map(|i| 1_000_000 + i).collect();
    let (x0, captions) = stage.clean_latents(&indices, &plain)?;
    let [b, c, frames] = x0.dims();
    let kept = ((keep * frames as f64).round() as usize).clamp(1, frames - 1);
    let silent_eps = vec![0.0f32; b * stage.silent_prompt().mean.len()];
    let silent = stage.silent_prompt().latents(&silent_eps, &plain)?;
    let blanks = vec![Some(kept..frames); b];
    let prompted = masked_prompt(silent.clone(), x0.clone(), &blanks)?;
    let captions: Vec<&str> = captions.iter().map(String::as_str).collect();
    let tokenizer = stage.tokenizer();
    let contexts = [
        model.context_with_prompt(tokenizer, &captions, silent, &plain)?,
        model.context_with_prompt(tokenizer, &captions, prompted, &plain)?,
    ];
    let clean = values(x0.clone())?;
    // How far the prompt moves the fused context, and the prompt tokens before fusion.
    let relative = |a: Tensor<3>, b: Tensor<3>| -> Result<f64, Box<dyn std::error::Error>> {
        let (a, b) = (values(a)?, values(b)?);
        let d: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum();
        let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
        Ok((d / n.max(1e-30)).sqrt())
    };
    let context_change = relative(contexts[1].clone(), contexts[0].clone())?;
    let token_change = relative(
        model.prompt_tokens(masked_prompt(
            stage.silent_prompt().latents(&silent_eps, &plain)?,
            x0.clone(),
            &blanks,
        )?),
        model.prompt_tokens(stage.silent_prompt().latents(&silent_eps, &plain)?),
    )?;
    println!(
        "{} step {step}: {clips} unseen clips, first {kept} of {frames} latent frames kept",
        dir.display()
    );
    println!(
        "the clip prompt moves the prompt tokens by {token_change:.3} and the fused context by \
         {context_change:.4} (relative RMS)"
    );
    println!(
        "| t | kept frames: silent prompt | kept: clip prompt | kept ratio | blank frames: silent | blank: clip prompt |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for t in [0.2f32, 0.5, 0.8, 0.95] {
        let eps = Tensor::<3>::from_data(
            TensorData::new(normals(&mut rng, b * c * frames), [b, c, frames]),
            &plain,
        );
        let z = x0.clone().mul_scalar(1.0 - t) + eps.mul_scalar(t);
        let times = Tensor::<1>::from_data(TensorData::new(vec![t; b], [b]), &plain);
        let mut row = Vec::new();
        for context in &contexts {
            let v = model.velocity(z.clone(), times.clone(), context.clone())?;
            let x0_hat = values(z.clone() - v.mul_scalar(t))?;
            row.push((
                mse(&x0_hat, &clean, frames, 0..kept),
                mse(&x0_hat, &clean, frames, kept..frames),
            ));
        }
        println!(
            "| {t} | {:.4} | {:.4} | {:.2} | {:.4} | {:.4} |",
            row[0].0,
            row[1].0,
            row[1].0 / row[0].0,
            row[0].1,
            row[1].1
        );
    }
    Ok(())
}
