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
//! `--update-decoder FILE` later swaps in a decoder fine-tuned on that VAE's frozen encoder.
//! `--encode-latents` encodes the teacher's clip pool into the run folder ahead of the teacher.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use audiox_train::train::dmd::StudentStage;
use audiox_train::train::teacher::{TeacherPrompts, export_student};
use audiox_train::train::{
    LogRecord, RunConfig, RunDir, Stop, TeacherStage, TrainError, VaeStage, export_teacher,
    export_vae, train_multi_stage, train_stage, trained_weights,
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
    /// Which stage to run: vae, teacher, student, or all (vae, then teacher, then student). The
    /// T5 encoder is trained with the teacher; the student is distilled from the trained teacher.
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
    let stages: &[&str] = match args.stage.as_str() {
        "all" => &["vae", "teacher", "student"],
        "vae" => &["vae"],
        "teacher" => &["teacher"],
        "student" => &["student"],
        other => {
            return Err(TrainError::config(
                "--stage",
                format!("`{other}`: expected vae, teacher, student or all"),
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
    let progress_line = |stage: &'static str, total: u64| {
        move |r: &LogRecord| {
            if r.step.is_multiple_of(every) || r.step == total {
                let terms: Vec<String> =
                    r.terms.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                println!(
                    "{stage} step {}/{total}: loss {:.4} ({}), lr {:.2e}, {:.2} s/step",
                    r.step,
                    r.loss,
                    terms.join(", "),
                    r.lr,
                    r.seconds
                );
            }
        }
    };
    for &stage in stages {
        match stage {
            "vae" => {
                if audiox_train::train::vae::imported_marker(&run).exists() {
                    let how = audiox_train::train::vae::vae_ready(&run)?.unwrap_or_default();
                    println!("vae: {how}; not trained in this run");
                    continue;
                }
                let vae = VaeStage::new(run.config(), &device)?;
                let total = run.config().vae.optim.steps;
                let mut progress = progress_line("vae", total);
                let outcome = train_stage(&vae, &run, &device, stop, &mut progress)?;
                let export = run.root().join("export");
                let (step, resumed_from, finished) =
                    (outcome.step, outcome.resumed_from, outcome.finished);
                // The moving average or checkpoint mean where the stage keeps one.
                let file = export_vae(&outcome.into_weights(), run.config(), &export)?;
                println!(
                    "vae: step {step}/{total} (resumed from {resumed_from}); weights written to {}",
                    file.display()
                );
                if !finished {
                    println!("vae: not finished; run the same command again to continue");
                    return Ok(());
                }
            }
            "teacher" => {
                let teacher = TeacherStage::new(&run, &device)?;
                let total = run.config().teacher.optim.steps;
                let mut progress = progress_line("teacher", total);
                let outcome = train_stage(&teacher, &run, &device, stop, &mut progress)?;
                let (step, resumed_from, finished) =
                    (outcome.step, outcome.resumed_from, outcome.finished);
                let averaged = match (&outcome.average, run.config().teacher.optim.checkpoint_mean)
                {
                    (None, _) => String::new(),
                    (Some(_), Some(mean)) => format!(
                        " (the mean of its checkpoints from step {} to {total})",
                        mean.from_step
                    ),
                    (Some(_), None) => " (the moving average of its weights)".to_string(),
                };
                let export = export_teacher(
                    &outcome.into_weights(),
                    run.config(),
                    &run.root().join("export"),
                )?;
                println!(
                    "teacher: step {step}/{total} (resumed from {resumed_from}); model folder written to {} (teacher in {}{averaged})",
                    export.dir.display(),
                    export.teacher.display()
                );
                if !finished {
                    println!("teacher: not finished; run the same command again to continue");
                    return Ok(());
                }
            }
            "student" => {
                // The trained teacher's weights, from its newest checkpoint (no teacher step
                // runs, and its optimiser state is not needed).
                let teacher_stage = TeacherStage::new(&run, &device)?;
                let teacher_total = run.config().teacher.optim.steps;
                let (teacher_step, teacher) = trained_weights(&teacher_stage, &run, &device)?;
                if teacher_step < teacher_total {
                    return Err(TrainError::config(
                        "--stage student",
                        format!(
                            "the teacher is at step {}/{teacher_total}: finish it first (--stage teacher)",
                            teacher_step
                        ),
                    ));
                }
                let mut prompts = TeacherPrompts::new(
                    teacher.clone(),
                    teacher_stage.tokenizer().clone(),
                    teacher_stage.silent_prompt().clone(),
                );
                if let Some(masking) = &run.config().student.audio_prompt {
                    prompts = prompts.with_clip_prompts(
                        masking.clone(),
                        std::sync::Arc::new(teacher_stage),
                        run.config().seed,
                    )?;
                }
                let student = StudentStage::new(
                    &run,
                    run.config().student.clone(),
                    teacher.dit.clone(),
                    prompts,
                    &device,
                )?;
                let total = run.config().student.optim.steps;
                let mut progress = progress_line("student", total);
                let outcome = train_multi_stage(&student, &run, &device, stop, &mut progress)?;
                let export = run.root().join("export");
                export_teacher(&teacher, run.config(), &export)?;
                let file = export_student(&teacher, &outcome.model[0].model, &export)?;
                println!(
                    "student: step {}/{total} (resumed from {}); student written to {}",
                    outcome.step,
                    outcome.resumed_from,
                    file.display()
                );
                if !outcome.finished {
                    println!("student: not finished; run the same command again to continue");
                    return Ok(());
                }
            }
            other => {
                return Err(TrainError::config(
                    "--stage",
                    format!("unknown stage `{other}`"),
                ));
            }
        }
    }
    Ok(())
}
