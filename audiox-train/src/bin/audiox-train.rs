//! Trains the embedded demo model, stage by stage, resumably.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --bin audiox-train -- \
//!     --out runs/demo --stage vae
//! ```
//!
//! A new `--out` folder starts a run with `--config FILE` (a `RunConfig` as JSON) or the
//! built-in demo configuration, and writes `run.json`; running the same command again resumes
//! from the newest checkpoint of each stage (a different `--config` is refused). `--max-steps`
//! and `--max-minutes` stop early, with a checkpoint, for runs split over several sessions.
//! `--print-config` prints the demo configuration to start from. `--import-vae FILE` gives a
//! new run a VAE trained elsewhere (an earlier run's export) in place of its vae stage, and
//! `--update-decoder FILE` later swaps in a decoder fine-tuned on that VAE's frozen encoder
//! (a run with a `decoder` section fine-tunes its decoder itself, in its last stage).
//! `--encode-latents` encodes the teacher's clip pool into the run folder ahead of the teacher.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use audiox_train::train::pipeline::{
    StageReport, train_base, train_decoder, train_student, train_teacher, train_vae,
};
use audiox_train::train::{
    LogRecord, RunConfig, RunDir, StageName, Stop, TeacherStage, TrainError,
};

/// mimalloc instead of the system allocator, told never to hand freed memory back to the
/// kernel (see [`keep_freed_memory`]): burn's CPU backend allocates a fresh buffer for most
/// tensor operations, and returned pages are page-faulted and zeroed again on the next step.
/// Demo teacher with its latents cached, one thread: 3.6-3.8 s per step with glibc's malloc,
/// 4.2-5.8 s with mimalloc's defaults, 2.5 s with mimalloc keeping its memory
/// (docs/training.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in both mimalloc v2 and v3;
/// `libmimalloc-sys` names the options around it, 14 and 16, but not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's default purge delays in milliseconds (v2: 10, v3: 1,000, in their `options.c`):
/// what the option at [`MI_OPTION_PURGE_DELAY`] reads when it is the purge delay and nobody set
/// it. Its neighbours read 0 or 1 by default.
const MI_DEFAULT_PURGE_DELAYS_MS: [std::ffi::c_long; 2] = [10, 1000];

/// Sets mimalloc's purge delay to -1 (never purge), unless `MIMALLOC_PURGE_DELAY` is set or the
/// option at that index does not read one of mimalloc's default purge delays (a mimalloc
/// version with another order: then nothing is changed). The process's resident memory stays at its
/// peak, which a training run reaches within its first steps anyway.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: option getters and setters of the allocator in use, called before any other
    // thread exists (mimalloc's option functions are not thread safe).
    unsafe {
        let delay = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
        if MI_DEFAULT_PURGE_DELAYS_MS.contains(&delay) {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "Train the audiox demo model (resumable; see docs/training.md)")]
struct Args {
    /// The run folder (created, or resumed when it holds a run.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The run configuration (JSON); default: the one stored in --out, else the demo run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Which stage to run: base, vae, teacher, student, decoder, or all (base, vae, teacher,
    /// student, decoder). The T5 encoder is trained with the teacher; the student is distilled
    /// from the trained teacher; the decoder stage (where the run has a `decoder` section)
    /// fine-tunes the VAE's decoder on its frozen encoder once the teacher is finished and
    /// exports that VAE. `base` trains the base run a run's teacher starts from, where its
    /// `teacher.init_from` has one, and imports that run's VAE.
    #[arg(long, default_value = "all")]
    stage: String,
    /// Stop each stage after this many steps in all (a checkpoint is written there).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Stop (with a checkpoint) after the first step that ends this many minutes after the
    /// start.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Compute device: cpu (default), or wgpu / cuda when this binary was built with the
    /// crate's `wgpu` / `cuda` feature (not run on a GPU yet; see docs/training.md).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Worker threads (1 makes runs reproducible bit for bit across resumes).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print a progress line every this many steps.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Use this trained VAE (the `pretransform/vae.safetensors` of an earlier run's export, at
    /// the run's VAE sizes) instead of training one: the vae stage is skipped. Only on a run
    /// whose vae and teacher stages have no checkpoint.
    #[arg(long, value_name = "FILE")]
    import_vae: Option<PathBuf>,
    /// Replace the decoder of this run's imported VAE with the decoder of this file, a VAE whose
    /// encoder is bit-identical to the imported one (a decoder-only fine-tune of it, with
    /// `vae.freeze_encoder`): the teacher and the student keep their latents, the export gets
    /// the new decoder. Refused when any encoder tensor differs.
    #[arg(long, value_name = "FILE")]
    update_decoder: Option<PathBuf>,
    /// Print the demo run configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
    /// Encode the teacher's clip pool with the run's trained VAE into the run folder
    /// (`teacher/latents/`) and exit, instead of training: the teacher then starts with every
    /// latent at hand. May run with more --threads than the teacher, and beside a paused or
    /// running teacher (which reads the new latents when it resumes).
    #[arg(long)]
    encode_latents: bool,
}

fn main() -> ExitCode {
    keep_freed_memory();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), TrainError> {
    if args.print_config {
        let text = serde_json::to_string_pretty(&RunConfig::demo())
            .map_err(|e| TrainError::config("demo", e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    let out = args
        .out
        .ok_or_else(|| TrainError::config("--out", "a run folder is required"))?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build_global()
        .map_err(|e| TrainError::config("--threads", e.to_string()))?;
    let device = audiox::select_device(&args.device, audiox::Precision::F32)
        .map_err(TrainError::Model)?
        .autodiff();
    let run = match (&args.config, out.join("run.json").exists()) {
        (Some(path), _) => RunDir::open(&out, RunConfig::from_file(path)?)?,
        (None, true) => RunDir::resume(&out).map_err(|e| match e {
            TrainError::Config { field, reason } if reason.contains("missing field") => {
                TrainError::Config {
                    field,
                    reason: format!(
                        "{reason}; a run started before that section existed continues with \
                         `--config FILE`, FILE holding the current demo configuration \
                         (`audiox-train --print-config > FILE`)"
                    ),
                }
            }
            other => other,
        })?,
        (None, false) => RunDir::open(&out, RunConfig::demo())?,
    };
    if let Some(source) = &args.import_vae {
        if run.config().base().is_some() {
            return Err(TrainError::config(
                "--import-vae",
                "this run's VAE is its base run's (teacher.init_from.base), imported by --stage base",
            ));
        }
        let file = audiox_train::train::vae::import_vae(
            &run,
            source,
            &audiox_train::train::teacher::inner_device(&device),
        )?;
        println!("vae: imported {} as {}", source.display(), file.display());
    }
    if let Some(source) = &args.update_decoder {
        let file = audiox_train::train::vae::update_decoder(
            &run,
            source,
            &audiox_train::train::teacher::inner_device(&device),
        )?;
        println!(
            "vae: the decoder of {} now in {} (encoder unchanged)",
            source.display(),
            file.display()
        );
    }
    if args.encode_latents {
        let teacher = TeacherStage::new(&run, &device)?;
        let start = std::time::Instant::now();
        let before = teacher.cached_latents();
        let mut last_print = 0;
        let encoded = teacher.encode_pool(16, 256, &mut |held, pool| {
            if held >= last_print + 256 || held == pool {
                last_print = held;
                println!(
                    "latents: {held}/{pool} clips ({:.0} s)",
                    start.elapsed().as_secs_f64()
                );
            }
        })?;
        println!(
            "latents: {encoded} clips encoded in {:.0} s ({before} were already in the run folder)",
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let stages: &[StageName] = match args.stage.as_str() {
        "all" => &[
            StageName::Vae,
            StageName::Teacher,
            StageName::Student,
            StageName::Decoder,
        ],
        "base" => &[],
        "vae" => &[StageName::Vae],
        "teacher" => &[StageName::Teacher],
        "student" => &[StageName::Student],
        "decoder" => &[StageName::Decoder],
        other => {
            return Err(TrainError::config(
                "--stage",
                format!("`{other}`: expected base, vae, teacher, student, decoder or all"),
            ));
        }
    };
    let deadline = match args.max_minutes {
        Some(m) if m.is_finite() && m >= 0.0 => {
            Some(std::time::Instant::now() + std::time::Duration::from_secs_f64(m * 60.0))
        }
        Some(m) => {
            return Err(TrainError::config(
                "--max-minutes",
                format!("{m} is not a number of minutes >= 0"),
            ));
        }
        None => None,
    };
    let stop = Stop {
        after_steps: args.max_steps,
        deadline,
    };
    let every = args.log_every.max(1);
    // "base vae", "base teacher" for the base run's stages.
    let label = |dir: &RunDir, stage: StageName| {
        if dir.root() == run.root() {
            stage.as_str().to_string()
        } else {
            format!("base {}", stage.as_str())
        }
    };
    let mut progress = |dir: &RunDir, stage: StageName, r: &LogRecord| {
        let total = match stage {
            StageName::Vae => dir.config().vae.optim.steps,
            StageName::Teacher => dir.config().teacher.optim.steps,
            StageName::Student => dir.config().student.optim.steps,
            StageName::Decoder => dir.config().decoder.as_ref().map_or(0, |d| d.optim.steps),
        };
        if r.step.is_multiple_of(every) || r.step == total {
            let terms: Vec<String> = r.terms.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            println!(
                "{} step {}/{total}: loss {:.4} ({}), lr {:.2e}, {:.2} s/step",
                label(dir, stage),
                r.step,
                r.loss,
                terms.join(", "),
                r.lr,
                r.seconds
            );
        }
    };
    // Prints what a stage did; `false` when it stopped before its last step.
    let report = |dir: &RunDir, r: &StageReport| {
        let outcome = match (r.written.as_os_str().is_empty(), r.weights.is_empty()) {
            (true, _) => r.weights.clone(),
            (false, true) => format!("weights written to {}", r.written.display()),
            (false, false) => format!("weights written to {} ({})", r.written.display(), r.weights),
        };
        let name = label(dir, r.stage);
        println!(
            "{name}: step {}/{} (resumed from {}); {outcome}",
            r.step, r.total, r.resumed_from
        );
        if !r.finished {
            println!("{name}: not finished; run the same command again to continue");
        }
        r.finished
    };
    if matches!(args.stage.as_str(), "all" | "base") {
        let finished = train_base(&run, &device, stop, &mut progress, &mut |dir, r| {
            report(dir, r);
        })?;
        if !finished {
            return Ok(());
        }
        if args.stage == "base" && run.config().base().is_none() {
            println!("base: this run has no base run to train");
        }
    }
    for &stage in stages {
        let done = match stage {
            StageName::Vae => match train_vae(&run, &device, stop, &mut progress)? {
                Some(r) => report(&run, &r),
                None => {
                    let how = audiox_train::train::vae::vae_ready(&run)?.unwrap_or_default();
                    println!("vae: {how}; not trained in this run");
                    true
                }
            },
            StageName::Teacher => report(&run, &train_teacher(&run, &device, stop, &mut progress)?),
            StageName::Student => report(&run, &train_student(&run, &device, stop, &mut progress)?),
            StageName::Decoder => match train_decoder(&run, &device, stop, &mut progress)? {
                Some(r) => report(&run, &r),
                None => {
                    println!("decoder: this run has no decoder section; nothing to train");
                    true
                }
            },
        };
        if !done {
            return Ok(());
        }
    }
    Ok(())
}
