//! Turns an exported demo model (a checkpoint folder in the official layout, as `audiox-train`
//! exports it) into the files the `audiox-demo` crate embeds: bf16 safetensors of only the
//! weights the model uses, the configs and the tokenizer. Then loads the result from memory
//! the way `AudioX::demo()` will, generates one clip with the student (and the teacher when
//! there is one), and checks the total against the 9 MB budget and the sample rate (16 kHz or
//! more).
//!
//! ```text
//! cargo run --release -p audiox --example demo_assets -- runs/demo/export audiox-demo/assets
//! ```
//!
//! The output folder keeps its `README.md`; `manifest.json` (sources and their sha256) is
//! written beside the files and not embedded.

use std::path::PathBuf;
use std::process::ExitCode;

use audiox::convert::{Precision, convert};
use audiox::{AudioX, CheckpointPaths, DenoiserKind, MemoryCheckpoint, Request};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to] = args.as_slice() else {
        eprintln!("usage: demo_assets <exported checkpoint folder> <assets folder>");
        return ExitCode::FAILURE;
    };
    match run(PathBuf::from(from), PathBuf::from(to)) {
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

fn run(from: PathBuf, to: PathBuf) -> audiox::Result<()> {
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

    let all = MemoryCheckpoint::read_dir(&to)?;
    let mut files = MemoryCheckpoint::new(audiox::demo::LABEL);
    for (path, size) in all.files().filter(|(p, _)| embedded(p)) {
        println!("{size:>10}  {path}");
        files.insert(path, all.get(path).unwrap_or_default().to_vec());
    }
    let total = files.total_bytes();
    println!("{total:>10}  in all (budget {})", audiox::demo::SIZE_BUDGET);
    if total > audiox::demo::SIZE_BUDGET {
        return Err(audiox::Error::InvalidRequest(format!(
            "the demo model takes {total} bytes, over the {} byte budget of a published crate",
            audiox::demo::SIZE_BUDGET
        )));
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
    if paths.teacher.is_some() {
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
