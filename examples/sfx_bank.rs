//! An engine-style workflow: keep one model loaded, pre-generate a bank of sound-effect
//! variations in the background with the jobs API, and write them as game-ready files (48 kHz
//! mono 16-bit WAV, loudness-normalised, silence-trimmed, faded) with a JSON index.
//!
//! ```text
//! cargo run --release --example sfx_bank -- --out sfx_bank \
//!     --prompt "a sword swing" --prompt "footsteps on gravel" --variations 4
//! cargo run --release --example sfx_bank -- --checkpoint-dir checkpoints --prompts prompts.txt
//! ```
//!
//! Without `--checkpoint-dir` the small random-weight model of the repository is used (the
//! files are written, but do not sound like anything). The index, `index.json`, lists for each
//! file its prompt, seed, duration and measured loudness.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use audiox::jobs::{Job, JobQueue, JobStage};
use audiox::postprocess::{OutputOptions, loudness_lufs};
use audiox::{AudioX, Request, WavFormat};
use clap::Parser;

/// Pre-generates a bank of sound-effect variations.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Checkpoint folder (default: the small random-weight model of the repository).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// A prompt (repeatable).
    #[arg(long)]
    prompt: Vec<String>,
    /// A text file with one prompt per line (blank lines and `#` comments skipped).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Variations per prompt.
    #[arg(long, default_value_t = 3)]
    variations: usize,
    /// Seconds per sound (at most the model's).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// First seed; variation `i` of prompt `p` uses `seed + p` and the batch's own noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target loudness in LUFS.
    #[arg(long, default_value_t = -16.0, allow_negative_numbers = true)]
    loudness: f64,
    /// Output sample rate in Hz.
    #[arg(long, default_value_t = 48_000)]
    sample_rate: u32,
    /// Jobs running at once (each uses the shared rayon pool).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Output folder.
    #[arg(long, default_value = "sfx_bank")]
    out: PathBuf,
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

fn prompts(args: &Args) -> audiox::Result<Vec<String>> {
    let mut list = args.prompt.clone();
    if let Some(file) = &args.prompts {
        let text = std::fs::read_to_string(file).map_err(|e| audiox::Error::io(file, e))?;
        list.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if list.is_empty() {
        list = vec![
            "a sword swing".into(),
            "footsteps on gravel".into(),
            "a coin is picked up".into(),
        ];
    }
    Ok(list)
}

/// A file-name-safe form of a prompt.
fn slug(prompt: &str) -> String {
    let s: String = prompt
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() { "sfx".into() } else { s }
}

fn run(args: Args) -> audiox::Result<()> {
    let dir = args.checkpoint_dir.clone().unwrap_or_else(|| {
        eprintln!("no --checkpoint-dir: using the random-weight model shipped in the repository");
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny/bundle")
    });
    let model = AudioX::builder().checkpoint_dir(&dir).build()?;
    let duration = args.duration.min(model.max_duration());
    std::fs::create_dir_all(&args.out).map_err(|e| audiox::Error::io(&args.out, e))?;
    let output = OutputOptions::new()
        .sample_rate(args.sample_rate)
        .mono(true)
        .trim_silence(None)
        .fade_out(0.05)
        .loudness(args.loudness)
        .format(WavFormat::Pcm16);

    // Submit everything at once; the queue runs `workers` jobs at a time in the background
    // while this thread is free (a game would keep running its frame loop here).
    let queue = JobQueue::new(model, args.workers)?;
    let prompts = prompts(&args)?;
    let jobs: Vec<(String, u64, Job)> = prompts
        .iter()
        .enumerate()
        .map(|(p, prompt)| {
            let seed = args.seed + p as u64;
            let request = Request::text(prompt.clone())
                .seed(seed)
                .num_samples(args.variations)
                .duration(duration)
                .output(output.clone());
            (prompt.clone(), seed, queue.submit(request))
        })
        .collect();

    let mut index = Vec::new();
    for (prompt, seed, job) in jobs {
        while !job.wait_timeout(Duration::from_millis(200)) {
            let p = job.progress();
            if p.stage != JobStage::Queued {
                eprintln!("  {prompt}: {:?} {:.0} %", p.stage, p.fraction * 100.0);
            }
        }
        let out = job.join()?;
        for (i, audio) in out.audio.iter().enumerate() {
            let file = format!("{}_{i:02}.wav", slug(&prompt));
            audio.write_wav_as(args.out.join(&file), output.format)?;
            let loudness = loudness_lufs(audio)?;
            println!(
                "{file}: {:.2} s, {} LUFS",
                audio.duration_secs(),
                loudness.map_or("-".into(), |l| format!("{l:.1}"))
            );
            index.push(serde_json::json!({
                "file": file,
                "prompt": prompt,
                "seed": seed,
                "variation": i,
                "duration_seconds": audio.duration_secs(),
                "sample_rate": audio.sample_rate(),
                "channels": audio.num_channels(),
                "loudness_lufs": loudness,
            }));
        }
    }
    let index_path = args.out.join("index.json");
    let text = serde_json::to_string_pretty(&serde_json::json!({ "sounds": index }))
        .map_err(|e| audiox::Error::InvalidRequest(format!("index: {e}")))?;
    std::fs::write(&index_path, text).map_err(|e| audiox::Error::io(&index_path, e))?;
    println!("wrote {} sounds and {}", index.len(), index_path.display());
    Ok(())
}
