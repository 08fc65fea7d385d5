//! A run's stages in order, as `audiox-train` runs them: each resumed from its newest
//! checkpoint, trained until it finishes or [`Stop`] says so, and exported into the run's
//! `export/` folder (the layout `audiox` loads) whenever it stops. The last, the decoder stage
//! ([`train_decoder`], when the run has one), replaces the exported VAE with one whose decoder
//! is fine-tuned. Before them, a run whose teacher starts from a **base run** it trains itself
//! ([`TeacherInit::base`]) trains that run's VAE and teacher stages in the base run's folder
//! and imports its VAE ([`train_base`]).
//!
//! ```no_run
//! use audiox_train::train::pipeline::{
//!     train_base, train_decoder, train_student, train_teacher, train_vae,
//! };
//! use audiox_train::train::{RunConfig, RunDir, Stop};
//! let device = burn::tensor::Device::flex().autodiff();
//! let run = RunDir::open("runs/demo", RunConfig::demo())?;
//! let mut progress = |_: &RunDir, stage: audiox_train::train::StageName, r: &audiox_train::train::LogRecord| {
//!     println!("{} {} {:.4}", stage.as_str(), r.step, r.loss)
//! };
//! if train_base(&run, &device, Stop::never(), &mut progress, &mut |_, _| {})? {
//!     train_vae(&run, &device, Stop::never(), &mut progress)?;
//!     train_teacher(&run, &device, Stop::never(), &mut progress)?;
//!     train_student(&run, &device, Stop::never(), &mut progress)?;
//!     train_decoder(&run, &device, Stop::never(), &mut progress)?;
//! }
//! # Ok::<(), audiox_train::train::TrainError>(())
//! ```
//!
//! [`TeacherInit::base`]: super::grow::TeacherInit::base

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::Device;

use super::checkpoint::Checkpoints;
use super::dmd::StudentStage;
use super::error::{TrainError, TrainResult};
use super::grow::source_root;
use super::judge::DetectorJudge;
use super::log::LogRecord;
use super::run::{LoopSettings, RunDir, StageName};
use super::stage::{StageOutcome, Stop, train_multi_stage, train_stage, trained_weights};
use super::teacher::{
    TeacherPrompts, TeacherStage, export_student, export_teacher, inner_device,
    load_exported_student,
};
use super::vae::{
    VaeStage, export_decoder, export_vae, import_vae, imported_marker, vae_export_path, vae_ready,
};

/// Called after every step: the run folder (a base run's or the run's own), the stage and the
/// step's record.
pub type Progress<'a> = dyn FnMut(&RunDir, StageName, &LogRecord) + 'a;

/// What one call of a stage did.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// The stage.
    pub stage: StageName,
    /// Steps done in all (over every call).
    pub step: u64,
    /// The stage's configured steps.
    pub total: u64,
    /// The step this call resumed from (0 for a new stage).
    pub resumed_from: u64,
    /// Whether every configured step is done.
    pub finished: bool,
    /// The file written last: the VAE, teacher or student weights in `export/`; empty when the
    /// call wrote nothing ([`StageReport::weights`] says why).
    pub written: PathBuf,
    /// Which weights were written when they are not the last trained ones: "the mean of its
    /// checkpoints from step ... to ..." or "the moving average of its weights"; empty
    /// otherwise.
    pub weights: String,
}

impl StageReport {
    /// The report of `stage` (run with `settings`) after `outcome`, before its export is
    /// written ([`StageReport::written`] empty).
    fn of<M>(stage: StageName, settings: &LoopSettings, outcome: &StageOutcome<M>) -> Self {
        let weights = match (outcome.average.is_some(), settings.checkpoint_mean) {
            (false, _) => String::new(),
            (true, Some(mean)) => format!(
                "the mean of its checkpoints from step {} to {}",
                mean.from_step, settings.steps
            ),
            (true, None) => "the moving average of its weights".to_string(),
        };
        StageReport {
            stage,
            step: outcome.step,
            total: settings.steps,
            resumed_from: outcome.resumed_from,
            finished: outcome.finished,
            written: PathBuf::new(),
            weights,
        }
    }
}

/// Trains the VAE stage of `run` and exports it (`export/pretransform/vae.safetensors` and the
/// model `config.json`). `None` when the run's VAE was imported (`--import-vae`, or a base
/// run's): nothing to train.
pub fn train_vae(
    run: &RunDir,
    device: &Device,
    stop: Stop,
    progress: &mut Progress<'_>,
) -> TrainResult<Option<StageReport>> {
    if imported_marker(run).exists() {
        // Checks that the export is still the imported file.
        vae_ready(run)?;
        return Ok(None);
    }
    if run.config().base().is_some() {
        return Err(TrainError::config(
            "--stage vae",
            "this run's VAE is its base run's, imported once the base run is trained \
             (--stage base)",
        ));
    }
    let stage = VaeStage::new(run.config(), device)?;
    let settings = run.config().vae.optim.clone();
    let outcome = train_stage(&stage, run, device, stop, &mut |r| {
        progress(run, StageName::Vae, r)
    })?;
    let mut report = StageReport::of(StageName::Vae, &settings, &outcome);
    if started(run, StageName::Decoder)? {
        // The export holds the decoder stage's fine-tune of this VAE (same encoder): writing
        // the VAE stage's weights over it would undo the decoder stage.
        report.written = PathBuf::new();
        report.weights = "not exported: the export holds the decoder stage's VAE".to_string();
        return Ok(Some(report));
    }
    report.written = export_vae(
        &outcome.into_weights(),
        run.config(),
        &run.root().join("export"),
    )?;
    Ok(Some(report))
}

/// Whether `stage` of `run` has a checkpoint.
fn started(run: &RunDir, stage: StageName) -> TrainResult<bool> {
    Ok(Checkpoints::new(&run.stage_dir(stage)).newest()?.is_some())
}

/// Trains the teacher stage of `run` (its VAE ready) and exports the model folder with the
/// teacher (`export/`, the teacher in `pretrained_ckpt/`).
pub fn train_teacher(
    run: &RunDir,
    device: &Device,
    stop: Stop,
    progress: &mut Progress<'_>,
) -> TrainResult<StageReport> {
    let stage = TeacherStage::new(run, device)?;
    let settings = run.config().teacher.optim.clone();
    let outcome = train_stage(&stage, run, device, stop, &mut |r| {
        progress(run, StageName::Teacher, r)
    })?;
    let mut report = StageReport::of(StageName::Teacher, &settings, &outcome);
    report.written = export_teacher(
        &outcome.into_weights(),
        run.config(),
        &run.root().join("export"),
    )?
    .teacher;
    Ok(report)
}

/// Distils the student of `run` from its finished teacher (the teacher's exported weights,
/// read from its newest checkpoint; no teacher step runs) and exports it with the teacher
/// (`export/audiox_turbo/`). Errors while the teacher is not finished.
pub fn train_student(
    run: &RunDir,
    device: &Device,
    stop: Stop,
    progress: &mut Progress<'_>,
) -> TrainResult<StageReport> {
    let config = run.config();
    let teacher_stage = TeacherStage::new(run, device)?;
    let teacher_total = config.teacher.optim.steps;
    let (teacher_step, teacher) = trained_weights(&teacher_stage, run, device)?;
    if teacher_step < teacher_total {
        return Err(TrainError::config(
            "--stage student",
            format!(
                "the teacher is at step {teacher_step}/{teacher_total}: finish it first \
                 (--stage teacher)"
            ),
        ));
    }
    let mut prompts = TeacherPrompts::new(
        teacher.clone(),
        teacher_stage.tokenizer().clone(),
        teacher_stage.silent_prompt().clone(),
    );
    let teacher_stage = Arc::new(teacher_stage);
    if let Some(masking) = &config.student.audio_prompt {
        prompts = prompts.with_clip_prompts(masking.clone(), teacher_stage.clone(), config.seed)?;
    }
    let mut student = StudentStage::new(
        run,
        config.student.clone(),
        teacher.dit.clone(),
        prompts,
        device,
    )?;
    if let Some((from_step, file)) = config
        .student
        .halving
        .as_ref()
        .and_then(|h| Some((h.from_step, h.reference.as_ref()?)))
    {
        // Read only by a stage that has not passed `from_step`: after it the stage reads the
        // copy it kept (and refuses to go on without it). A relative path is the run folder's.
        let newest = Checkpoints::new(&run.stage_dir(StageName::Student)).newest()?;
        if newest.is_none_or(|step| step <= from_step) {
            let file = run.root().join(file);
            student = student.with_halving_reference(&load_exported_student(&teacher.dit, &file)?);
        }
    }
    if config.student.regression_filter.is_some() {
        // The filter's judge hears the teacher's results as the metric hears the model's.
        let judge = DetectorJudge::of_run(run, &super::teacher::inner_device(device))?;
        student = student.with_pair_judge(run, &judge)?;
    }
    if config.student.critic.is_some() {
        // The critic's real clips: the training clips encoded by the teacher's VAE.
        student = student.with_real_latents(teacher_stage);
    }
    let outcome = train_multi_stage(&student, run, device, stop, &mut |r| {
        progress(run, StageName::Student, r)
    })?;
    let export = run.root().join("export");
    export_teacher(&teacher, config, &export)?;
    let mut report = StageReport::of(StageName::Student, &config.student.optim, &outcome);
    report.written = export_student(&teacher, &outcome.model[0].model, &export)?;
    Ok(report)
}

/// Trains the decoder stage of `run` ([`VaeStage::decoder`]) and exports its VAE into the
/// run's export, in place of the VAE the teacher was trained on (the encoder is that VAE's, bit
/// for bit: see [`export_decoder`]). `None` when the run has no decoder section. Errors while
/// the teacher is not finished: the teacher keys its stored latents on the exported VAE file,
/// so the file must not change under it.
pub fn train_decoder(
    run: &RunDir,
    device: &Device,
    stop: Stop,
    progress: &mut Progress<'_>,
) -> TrainResult<Option<StageReport>> {
    let Some(settings) = run.config().decoder.as_ref().map(|d| d.optim.clone()) else {
        return Ok(None);
    };
    let teacher_total = run.config().teacher.optim.steps;
    let teacher_step = Checkpoints::new(&run.stage_dir(StageName::Teacher))
        .newest()?
        .unwrap_or(0);
    if teacher_step < teacher_total {
        return Err(TrainError::config(
            "--stage decoder",
            format!(
                "the teacher is at step {teacher_step}/{teacher_total}: the decoder stage comes \
                 after it (--stage teacher)"
            ),
        ));
    }
    let stage = VaeStage::decoder(run, device)?;
    let outcome = train_stage(&stage, run, device, stop, &mut |r| {
        progress(run, StageName::Decoder, r)
    })?;
    let mut report = StageReport::of(StageName::Decoder, &settings, &outcome);
    report.written = export_decoder(&outcome.into_weights(), run)?;
    Ok(Some(report))
}

/// The base run of `run` ([`TeacherInit::base`](super::grow::TeacherInit::base)), opened
/// (created on first use) in its folder; `None` when the run has none.
pub fn base_run(run: &RunDir) -> TrainResult<Option<RunDir>> {
    let (Some(init), Some(base)) = (&run.config().teacher.init_from, run.config().base()) else {
        return Ok(None);
    };
    let root = source_root(init, run.root());
    if root == run.root() {
        return Err(TrainError::config(
            "teacher.init_from.run",
            "the base run needs a folder of its own, not the run's folder",
        ));
    }
    Ok(Some(RunDir::open(root, base.clone())?))
}

/// Trains the base run of `run`, if it has one and its own teacher has not started: the base
/// run's VAE and teacher stages in the base run's folder (resumed like any stage; its student
/// stage is never trained), then imports the base run's VAE into `run`. `report` is called
/// with the base run and each stage's report. Returns whether `run` may go on with its own
/// stages: `true` once the base run is finished and its VAE imported (or when there is no
/// base run to train), `false` when `stop` stopped the base run first.
pub fn train_base(
    run: &RunDir,
    device: &Device,
    stop: Stop,
    progress: &mut Progress<'_>,
    report: &mut dyn FnMut(&RunDir, &StageReport),
) -> TrainResult<bool> {
    if started(run, StageName::Teacher)? {
        // Its teacher no longer reads the base run, which may have moved.
        return Ok(true);
    }
    let Some(base) = base_run(run)? else {
        return Ok(true);
    };
    if let Some(vae) = train_vae(&base, device, stop, progress)? {
        report(&base, &vae);
        if !vae.finished {
            return Ok(false);
        }
    }
    let teacher = train_teacher(&base, device, stop, progress)?;
    report(&base, &teacher);
    if !teacher.finished {
        return Ok(false);
    }
    if !imported_marker(run).exists() {
        import_vae(run, &vae_export_path(&base), &inner_device(device))?;
    }
    Ok(true)
}
