//! Convert a checkpoint folder (the official `.ckpt`/`.pth` files, or a Hub repository) to
//! safetensors in the same layout: only the weights the model uses, weight norm fused, in f32
//! (bit-identical audio), bf16 or f16, with `manifest.json` (source sha256s, precision, tool
//! version).
//!
//! ```text
//! cargo run --release --example convert -- --checkpoint-dir checkpoints --out converted
//! cargo run --release --example convert -- --checkpoint-dir HKUSTAudio/AudioX-Turbo --out converted --precision bf16
//! cargo run --release --example generate -- --checkpoint-dir converted --prompt "rain"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use audiox::CheckpointPaths;
use audiox::convert::{Precision, convert};
use clap::Parser;

/// Converts AudioX checkpoints to safetensors.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A checkpoint folder in the official layout, or a Hub repository id
    /// (`HKUSTAudio/AudioX-Turbo`, downloaded into the Hugging Face cache).
    #[arg(long)]
    checkpoint_dir: String,
    /// The output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Element type of the written weights: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Also convert the teacher (`pretrained_ckpt/`) when the folder has it.
    #[arg(long)]
    teacher: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn source(args: &Args) -> audiox::Result<CheckpointPaths> {
    let local = PathBuf::from(&args.checkpoint_dir);
    if local.is_dir() {
        let mut paths = CheckpointPaths::from_dir(&local)?;
        if !args.teacher {
            paths.teacher = None;
        }
        return Ok(paths);
    }
    hub_source(args)
}

#[cfg(feature = "hub")]
fn hub_source(args: &Args) -> audiox::Result<CheckpointPaths> {
    let mut paths = audiox::Pretrained::new(args.checkpoint_dir.clone()).download()?;
    if args.teacher {
        let with_teacher = audiox::Pretrained::new(args.checkpoint_dir.clone())
            .teacher(true)
            .download()?;
        paths.teacher = with_teacher.teacher;
    }
    Ok(paths)
}

#[cfg(not(feature = "hub"))]
fn hub_source(args: &Args) -> audiox::Result<CheckpointPaths> {
    Err(audiox::Error::InvalidRequest(format!(
        "{}: not a folder (repository ids need the `hub` feature)",
        args.checkpoint_dir
    )))
}

fn run(args: Args) -> audiox::Result<()> {
    let precision: Precision = args.precision.parse()?;
    let paths = source(&args)?;
    let started = std::time::Instant::now();
    let done = convert(&paths, &args.out, precision)?;
    for f in &done.files {
        println!("wrote {}", args.out.join(f).display());
    }
    println!(
        "{} tensors ({} weight-norm pairs fused), {precision}, in {:.1} s",
        done.tensors,
        done.fused,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
