//! Turns an exported demo model (a checkpoint folder in the official layout, as `audiox-train`
//! exports it) into the files the `audiox-demo` crate embeds (bf16 safetensors of only the
//! weights the model uses, the configs and the tokenizer) and the teacher that the
//! `audiox-demo-teacher` crate embeds. Then loads the result from memory the way
//! `AudioX::demo()` will, generates one clip with the student (and the teacher when there is
//! one), and checks each crate's part against its 9 MB budget and the sample rate (16 kHz or
//! more).
//!
//! ```text
//! cargo run --release -p audiox --example demo_assets -- runs/demo/export audiox-demo/assets audiox-demo-teacher/assets
//! ```
//!
//! The output folders keep their `README.md`; `manifest.json` (sources and their sha256, the
//! teacher's too) is written beside the student's files and not embedded. A teacher left in the
//! teacher's folder by an earlier run is replaced, or removed when the export has none.

use std::path::PathBuf;
use std::process::ExitCode;

use audiox::convert::{Precision, convert};
use audiox::{AudioX, CheckpointPaths, DenoiserKind, MemoryCheckpoint, Request};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to, teacher_to] = args.as_slice() else {
        eprintln!(
            "usage: demo_assets <exported checkpoint folder> <assets folder> <teacher's assets folder>"
        );
        return ExitCode::FAILURE;
    };
    match run(
        PathBuf::from(from),
        PathBuf::from(to),
        PathBuf::from(teacher_to),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Files of `dir` that `audiox-demo` does not embed.
fn embedded(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !(name == "README.md" || name == "manifest.json" || name.starts_with('.'))
}

/// The teacher's folder in the official layout (the first component of its file's path).
fn teacher_dir() -> &'static str {
    audiox::demo::TEACHER_FILE
        .split('/')
        .next()
        .unwrap_or(audiox::demo::TEACHER_FILE)
}

/// Fails when the files of one crate are over its budget.
fn check_budget(crate_name: &str, total: usize) -> audiox::Result<()> {
    println!(
        "{total:>10}  in all in {crate_name} (budget {})",
        audiox::demo::SIZE_BUDGET
    );
    if total > audiox::demo::SIZE_BUDGET {
        return Err(audiox::Error::InvalidRequest(format!(
            "{crate_name}'s part of the demo model takes {total} bytes, over the {} byte budget \
             of a published crate",
            audiox::demo::SIZE_BUDGET
        )));
    }
    Ok(())
}

fn run(from: PathBuf, to: PathBuf, teacher_to: PathBuf) -> audiox::Result<()> {
    let mut paths = CheckpointPaths::from_dir(&from)?;
    if paths.teacher.is_none() {
        let teacher = from.join("pretrained_ckpt/pretrained_ckpt.safetensors");
        paths.teacher = Some(teacher).filter(|p| p.exists());
    }
    let done = convert(&paths, &to, Precision::Bf16)?;
    eprintln!(
        "converted {} tensors ({} weight-norm pairs fused) into {}",
        done.tensors,
        done.fused,
        to.display()
    );

    // The teacher goes to its own crate's folder.
    let io = |path: &std::path::Path, e| audiox::Error::io(path, e);
    let teacher_from = to.join(teacher_dir());
    let teacher_into = teacher_to.join(teacher_dir());
    if teacher_into.exists() {
        std::fs::remove_dir_all(&teacher_into).map_err(|e| io(&teacher_into, e))?;
    }
    if paths.teacher.is_some() {
        std::fs::create_dir_all(&teacher_into).map_err(|e| io(&teacher_into, e))?;
        let file = teacher_to.join(audiox::demo::TEACHER_FILE);
        std::fs::rename(to.join(audiox::demo::TEACHER_FILE), &file).map_err(|e| io(&file, e))?;
    }
    // Nothing else of the teacher's folder stays beside the student (files of an earlier
    // layout, before the split, included).
    if teacher_from.exists() {
        std::fs::remove_dir_all(&teacher_from).map_err(|e| io(&teacher_from, e))?;
    }

    let mut files = MemoryCheckpoint::new(audiox::demo::LABEL);
    for (folder, crate_name) in [(&to, "audiox-demo"), (&teacher_to, "audiox-demo-teacher")] {
        let all = MemoryCheckpoint::read_dir(folder)?;
        let mut total = 0;
        for (path, size) in all.files().filter(|(p, _)| embedded(p)) {
            // Each crate embeds its own part of the layout (see their build.rs).
            let teachers = path.starts_with(&format!("{}/", teacher_dir()));
            if teachers != (crate_name == "audiox-demo-teacher") {
                continue;
            }
            println!("{size:>10}  {path}");
            total += size;
            files.insert(path, all.get(path).unwrap_or_default().to_vec());
        }
        check_budget(crate_name, total)?;
    }

    let mut kinds = vec![DenoiserKind::Student];
    // Issue 16: the shipped demo model runs at 16 kHz or more.
    let rate = AudioX::builder()
        .checkpoint_memory(files.clone())
        .build()?
        .sample_rate();
    if rate < 16_000 {
        return Err(audiox::Error::InvalidRequest(format!(
            "the demo model runs at {rate} Hz; the shipped demo model must run at 16 kHz or more"
        )));
    }
    if files.contains(audiox::demo::TEACHER_FILE) {
        kinds.push(DenoiserKind::Teacher);
    }
    for kind in kinds {
        let model = AudioX::builder()
            .checkpoint_memory(files.clone())
            .denoiser(kind)
            .build()?;
        let out = model.generate(Request::text("three high beeps").seed(1))?;
        let peak = out.audio[0]
            .channels()
            .iter()
            .flatten()
            .fold(0.0f32, |m, x| m.max(x.abs()));
        println!(
            "{kind:?} loads from memory: {} Hz, {:.2} s, peak {peak:.3}",
            model.sample_rate(),
            out.audio[0].duration_secs()
        );
    }
    Ok(())
}
