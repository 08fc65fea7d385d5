//! Averages teacher (or student) checkpoints into one: the mean of every float parameter
//! over several checkpoints of the same architecture ([`audiox_train::train::average::mean`]:
//! stochastic weight averaging over a stretch of training, for checkpoints of several runs or
//! chosen by hand; within one run the stage's own `checkpoint_mean` setting makes the same
//! mean when it finishes, and the exponential moving average, `ema_decay`, is the other way).
//! On the demo teacher the mean of fifteen
//! checkpoints counts 10-12 points more of 100 held-out captions than the first and the last
//! of them (`docs/training.md`). Each checkpoint's trained weights are averaged, never a
//! moving average it holds (`average.bpk`).
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example average_checkpoints -- \
//!     [--student] OUT_RUN OUT_STEP SRC_RUN:STEP [SRC_RUN:STEP ...]
//! ```
//!
//! Every source is loaded with `OUT_RUN`'s configuration (its `run.json`: the sources must
//! have the same model sizes; a checkpoint that does not fit is an error) and the mean is
//! written as the teacher checkpoint of step `OUT_STEP` in `OUT_RUN` (other checkpoints there
//! are kept; one of that step is replaced). The optimiser state is the last source's, so
//! training can go on from the mean. Score it like any checkpoint (`layout_oracle OUT_RUN
//! OUT_STEP --no-oracle --cfg 2`); distil a student from it with `teacher.steps` set to
//! `OUT_STEP` and no later teacher checkpoint in the run.
//!
//! `--student` averages checkpoints of the DMD student stage instead: each of its parts (the
//! student and the fake-score model) is averaged on its own and the mean is written as the
//! student checkpoint of step `OUT_STEP`, which `audiox-train --stage student --max-steps 0`
//! exports once the run's `student/loss.jsonl` ends at that step.

use std::path::PathBuf;

use audiox_train::train::checkpoint::{Checkpoints, Part};
use audiox_train::train::dmd::{PARTS, fresh_copy};
use audiox_train::train::{RunDir, StageName, TeacherModel, average};
use burn::optim::AdamConfig;
use burn::tensor::Device;

fn parse_source(s: &str) -> Result<(PathBuf, u64), String> {
    let (dir, step) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected SRC_RUN:STEP"))?;
    let step = step.parse().map_err(|e| format!("{s:?}: step: {e}"))?;
    Ok((PathBuf::from(dir), step))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage =
        "usage: average_checkpoints [--student] OUT_RUN OUT_STEP SRC_RUN:STEP [SRC_RUN:STEP ...]";
    let mut it = std::env::args().skip(1).peekable();
    let student = it.next_if(|a| a == "--student").is_some();
    let out_dir = PathBuf::from(it.next().ok_or(usage)?);
    let out_step: u64 = it
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("OUT_STEP: {e}"))?;
    let sources = it
        .map(|s| parse_source(&s))
        .collect::<Result<Vec<_>, _>>()?;
    if sources.is_empty() {
        return Err(usage.into());
    }
    let out = RunDir::resume(&out_dir)?;
    let device = Device::flex().autodiff();
    if student {
        return average_students(&out, out_step, &sources, &device);
    }
    let mut models = Vec::with_capacity(sources.len());
    let mut optim = None;
    for (dir, step) in &sources {
        let model = TeacherModel::init(out.config(), &device)?;
        let loaded = Checkpoints::new(&dir.join(StageName::Teacher.as_str())).load(
            *step,
            model,
            burn::optim::AdamConfig::new().init(),
        )?;
        models.push(loaded.model);
        optim = Some(loaded.optim);
        eprintln!("loaded {}:{step}", dir.display());
    }
    let mean = average::mean(models)?;
    let optim = optim.ok_or(usage)?;
    let path = Checkpoints::new(&out.stage_dir(StageName::Teacher)).save(
        &mean,
        &optim,
        out_step,
        usize::MAX,
    )?;
    println!(
        "wrote the mean of {} checkpoints to {}",
        sources.len(),
        path.display()
    );
    Ok(())
}

/// The `--student` case: every part of the DMD stage's checkpoints averaged on its own.
fn average_students(
    out: &RunDir,
    out_step: u64,
    sources: &[(PathBuf, u64)],
    device: &Device,
) -> Result<(), Box<dyn std::error::Error>> {
    let template = TeacherModel::init(out.config(), device)?.dit;
    let mut models: Vec<Vec<_>> = PARTS.iter().map(|_| Vec::new()).collect();
    let mut optims = Vec::new();
    for (dir, step) in sources {
        let fresh = PARTS
            .iter()
            .map(|name| Part {
                name: name.to_string(),
                model: fresh_copy(&template, device),
                optim: AdamConfig::new().init(),
            })
            .collect();
        let parts =
            Checkpoints::new(&dir.join(StageName::Student.as_str())).load_parts(*step, fresh)?;
        optims.clear();
        for (part, models) in parts.into_iter().zip(models.iter_mut()) {
            models.push(part.model);
            optims.push(part.optim);
        }
        eprintln!("loaded {}:{step}", dir.display());
    }
    let mut parts = Vec::new();
    for ((name, models), optim) in PARTS.iter().zip(models).zip(optims) {
        parts.push(Part {
            name: name.to_string(),
            model: average::mean(models)?,
            optim,
        });
    }
    let path = Checkpoints::new(&out.stage_dir(StageName::Student)).save_parts(
        &parts,
        out_step,
        usize::MAX,
    )?;
    println!(
        "wrote the mean of {} student checkpoints to {}",
        sources.len(),
        path.display()
    );
    Ok(())
}
