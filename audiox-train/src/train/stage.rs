//! The optimisation loop shared by every stage: resume from the newest checkpoint, step, log,
//! checkpoint.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Bool, Device, Int, Tensor};

use super::average::{ema_start, ema_update, mean, with_gradient_requirements_of};
use super::checkpoint::{Checkpoints, Part};
use super::error::{TrainError, TrainResult};
use super::log::{LogRecord, LossLog};
use super::run::{LoopSettings, RunDir, StageName};

/// The loss of one step: the scalar to minimise and its named terms (for the log).
pub struct StepLoss {
    /// The total loss, shape `[1]`, on the autodiff device.
    pub loss: Tensor<1>,
    /// Named terms (unweighted), for the log.
    pub terms: BTreeMap<String, f64>,
}

/// A trainable stage.
pub trait Stage {
    /// The module trained.
    type Model: Module;

    /// Which stage this is.
    fn name(&self) -> StageName;

    /// The optimisation loop settings.
    fn settings(&self) -> &LoopSettings;

    /// The learning rate of step `step` (0-based): the settings' schedule
    /// ([`LoopSettings::lr_at`]) unless the stage changes it. A function of `step` alone, so
    /// that a resumed run keeps the schedule.
    fn lr_at(&self, step: u64) -> f64 {
        self.settings().lr_at(step)
    }

    /// The model with its initial (random, seeded) weights on `device`, parameters requiring
    /// gradients.
    fn init_model(&self, device: &Device) -> TrainResult<Self::Model>;

    /// The weights a new run of the stage starts from ([`train_stage`] calls it only when the
    /// stage has no checkpoint): [`Stage::init_model`]'s unless the stage starts from trained
    /// weights (the teacher's `init_from`). [`Stage::init_model`] stays the template that
    /// checkpoints are loaded into.
    fn initial_model(&self, device: &Device) -> TrainResult<Self::Model> {
        self.init_model(device)
    }

    /// The loss of optimiser step `step` (0-based). Its batch and noise must be a pure function
    /// of the run seed and `step`, which is what makes a resumed run identical to an
    /// uninterrupted one.
    fn loss(&self, model: &Self::Model, step: u64, device: &Device) -> TrainResult<StepLoss>;

    /// Parameters the optimiser leaves as they are: their gradients are dropped before each
    /// update (none by default).
    fn frozen(&self, _model: &Self::Model) -> Vec<ParamId> {
        Vec::new()
    }

    /// Called by [`train_stage`] after each checkpoint of step `step` is written: where a
    /// stage saves what it caches for the next process (the teacher's clip latents). Nothing by
    /// default.
    fn checkpointed(&self, _step: u64) -> TrainResult<()> {
        Ok(())
    }
}

/// The ids of every float parameter of `module`, in visiting order.
pub fn float_param_ids<M: Module>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
        fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<D, Int>>) {}
        fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<D, Bool>>) {}
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

/// How a call to [`train_stage`] ended.
pub struct StageOutcome<M> {
    /// The model after the last step done.
    pub model: M,
    /// The moving average of its weights, where the stage keeps one
    /// ([`LoopSettings::ema_decay`]), or the mean of its checkpoints once a stage with
    /// [`LoopSettings::checkpoint_mean`] is finished.
    pub average: Option<M>,
    /// Steps done in all (over every run of this stage).
    pub step: u64,
    /// The step the call resumed from (0 for a new stage).
    pub resumed_from: u64,
    /// Whether every configured step is done.
    pub finished: bool,
}

impl<M: Module> StageOutcome<M> {
    /// The weights to export and to build on: the moving average or checkpoint mean where the
    /// stage keeps one (its parameters requiring gradients where the trained model's do, so
    /// that a later stage can train copies of it as it would the trained model), the trained
    /// weights otherwise.
    pub fn into_weights(self) -> M {
        match self.average {
            Some(average) => with_gradient_requirements_of(average, &self.model),
            None => self.model,
        }
    }
}

/// When a call to [`train_stage`] stops before the configured step count (a checkpoint is
/// written where it stops, so the next call resumes there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stop {
    /// After this many steps in all (over every call).
    pub after_steps: Option<u64>,
    /// After the first step that ends at or after this instant.
    pub deadline: Option<Instant>,
}

impl Stop {
    /// Never stops early.
    pub fn never() -> Self {
        Stop::default()
    }

    /// Stops after `steps` steps in all.
    pub fn after_steps(steps: u64) -> Self {
        Stop {
            after_steps: Some(steps),
            deadline: None,
        }
    }
}

/// The Adam optimiser of a stage's loop settings (betas and gradient clipping).
pub(crate) fn optimizer(settings: &LoopSettings) -> ModuleOptimizer {
    let mut config =
        AdamConfig::new().with_grad_clipping(settings.grad_clip.map(GradientClippingConfig::Norm));
    if let Some((beta_1, beta_2)) = settings.adam_betas {
        config = config.with_beta_1(beta_1).with_beta_2(beta_2);
    }
    config.init()
}

/// Runs (or resumes) `stage` in `run` on `device`: loads the newest checkpoint when there is
/// one, then steps until the configured step count or until `stop` says (a checkpoint is
/// written there too), appending to the stage's `loss.jsonl` and calling
/// `progress` after every step. Where the settings ask for a moving average of the weights
/// ([`LoopSettings::ema_decay`]) it is updated after every step, saved in every checkpoint
/// and resumed with it; where they ask for a checkpoint mean
/// ([`LoopSettings::checkpoint_mean`]) it is made once the last step is done and returned as
/// the outcome's `average`.
pub fn train_stage<S: Stage>(
    stage: &S,
    run: &RunDir,
    device: &Device,
    stop: Stop,
    progress: &mut dyn FnMut(&LogRecord),
) -> TrainResult<StageOutcome<S::Model>> {
    let settings = stage.settings().clone();
    let dir = run.stage_dir(stage.name());
    let checkpoints = Checkpoints::new(&dir).protecting(settings.mean_steps());
    checkpoints.remove_partial()?;
    let (mut model, mut optim, start) = match checkpoints.steps()?.last() {
        Some(&step) => {
            let loaded = checkpoints.load(step, stage.init_model(device)?, optimizer(&settings))?;
            (loaded.model, loaded.optim, loaded.step)
        }
        None => (stage.initial_model(device)?, optimizer(&settings), 0),
    };
    // The moving average: the checkpoint's where it holds one, else the weights this call
    // starts from.
    let mut average = match settings.ema_decay {
        None => None,
        Some(_) => Some(match start {
            0 => ema_start(&model),
            step => match checkpoints.load_average(step, stage.init_model(device)?)? {
                Some(a) => ema_start(&a),
                None => ema_start(&model),
            },
        }),
    };
    // The parameters the optimiser updates, when the stage freezes some (ids survive the
    // optimiser's updates, so this is decided once).
    let frozen = stage.frozen(&model);
    let trained: Option<Vec<ParamId>> = (!frozen.is_empty()).then(|| {
        float_param_ids(&model)
            .into_iter()
            .filter(|id| !frozen.contains(id))
            .collect()
    });
    let mut log = LossLog::open(&dir.join("loss.jsonl"), start)?;
    let end = stop
        .after_steps
        .map_or(settings.steps, |s| s.min(settings.steps));
    let mut step = start;
    while step < end {
        let t0 = Instant::now();
        let lr = stage.lr_at(step);
        let StepLoss { loss, terms } = stage.loss(&model, step, device)?;
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(TrainError::config(
                format!("{}.lr", stage.name().as_str()),
                format!(
                    "the loss became {value} at step {} (diverged); lower the learning rate or resume from an earlier checkpoint",
                    step + 1
                ),
            ));
        }
        let grads = match &trained {
            None => GradientsParams::from_grads(loss.backward(), &model),
            Some(ids) => GradientsParams::from_params(&mut loss.backward(), &model, ids),
        };
        model = optim.step(lr, model, grads);
        if let (Some(a), Some(decay)) = (average.take(), settings.ema_decay) {
            average = Some(ema_update(a, &model, decay, &frozen)?);
        }
        step += 1;
        let record = LogRecord {
            step,
            loss: value,
            terms,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        log.append(&record)?;
        progress(&record);
        let out_of_time = stop.deadline.is_some_and(|d| Instant::now() >= d);
        if step.is_multiple_of(settings.checkpoint_every) || step == end || out_of_time {
            checkpoints.save_with_average(
                &model,
                average.as_ref(),
                &optim,
                step,
                settings.keep_checkpoints,
            )?;
            stage.checkpointed(step)?;
        }
        if out_of_time {
            break;
        }
    }
    let finished = step >= settings.steps;
    if finished && settings.checkpoint_mean.is_some() {
        average = Some(checkpoint_mean(
            stage,
            &checkpoints,
            &model,
            &optim,
            device,
        )?);
    }
    Ok(StageOutcome {
        model,
        average,
        step,
        resumed_from: start,
        finished,
    })
}

/// The weights a trained `stage` of `run` hands on, read from its newest checkpoint without
/// stepping and without the optimiser state, with that checkpoint's step: its moving average or
/// checkpoint mean where the stage keeps one (as [`StageOutcome::into_weights`]), its trained
/// weights otherwise. What a later stage needs (the student needs the teacher's weights only),
/// so a checkpoint folder copied without its `optim.bpk` serves. Where the stage asks for a
/// checkpoint mean and its last checkpoint holds none, the mean is made from the member
/// checkpoints (their weights only) and not written. Errors: no checkpoint; a file missing,
/// truncated or corrupt (named); a member of the mean missing (its step named).
pub fn trained_weights<S: Stage>(
    stage: &S,
    run: &RunDir,
    device: &Device,
) -> TrainResult<(u64, S::Model)> {
    let settings = stage.settings();
    let dir = run.stage_dir(stage.name());
    let checkpoints = Checkpoints::new(&dir);
    let Some(&step) = checkpoints.steps()?.last() else {
        return Err(TrainError::config(
            format!("{}.checkpoints", stage.name().as_str()),
            format!("{} holds no checkpoint", dir.display()),
        ));
    };
    let model = checkpoints.load_model(step, stage.init_model(device)?)?;
    let average = match checkpoints.load_average(step, stage.init_model(device)?)? {
        Some(average) => Some(average),
        None if settings.checkpoint_mean.is_some() && step >= settings.steps => {
            Some(mean_of_member_checkpoints(stage, &checkpoints, device)?)
        }
        None => None,
    };
    let weights = match average {
        Some(average) => with_gradient_requirements_of(average, &model),
        None => model,
    };
    Ok((step, weights))
}

/// The mean of a finished stage's checkpoints ([`LoopSettings::checkpoint_mean`]): read from
/// its last checkpoint where an earlier call saved it there, otherwise averaged from the
/// checkpoints of [`LoopSettings::mean_steps`] and saved with the last checkpoint (`model` and
/// `optim`: its trained weights and optimiser state, written again unchanged). A missing
/// checkpoint of the mean is a [`TrainError::Config`] naming its step.
fn checkpoint_mean<S: Stage>(
    stage: &S,
    checkpoints: &Checkpoints,
    model: &S::Model,
    optim: &ModuleOptimizer,
    device: &Device,
) -> TrainResult<S::Model> {
    let settings = stage.settings();
    let last = settings.steps;
    if let Some(mean) = checkpoints.load_average(last, stage.init_model(device)?)? {
        return Ok(mean);
    }
    let mean = mean_of_member_checkpoints(stage, checkpoints, device)?;
    checkpoints.save_with_average(model, Some(&mean), optim, last, settings.keep_checkpoints)?;
    Ok(mean)
}

/// The mean of the weights of `stage`'s checkpoints of [`LoopSettings::mean_steps`] (weights
/// only: their optimiser state is not read). A missing member is a [`TrainError::Config`]
/// naming its step.
fn mean_of_member_checkpoints<S: Stage>(
    stage: &S,
    checkpoints: &Checkpoints,
    device: &Device,
) -> TrainResult<S::Model> {
    let settings = stage.settings();
    let held = checkpoints.steps()?;
    let mut members = Vec::new();
    for step in settings.mean_steps() {
        if !held.contains(&step) {
            return Err(TrainError::config(
                format!("{}.checkpoint_mean", stage.name().as_str()),
                format!(
                    "the checkpoint of step {step} is not in {} (a run folder from before the \
                     setting, or deleted by hand): lower from_step past it, or train the \
                     stretch again",
                    checkpoints.path(step).display()
                ),
            ));
        }
        members.push(checkpoints.load_model(step, stage.init_model(device)?)?);
    }
    mean(members)
}

/// A stage that trains several parts, each a model with its own optimiser, and runs its own
/// optimiser updates within a step (the DMD stage: a generator update of the student, then
/// one or more updates of the fake-score model). [`train_multi_stage`] runs it with the same
/// resume, log and checkpoint rules as [`train_stage`]; its checkpoints hold every part's
/// model and optimiser state ([`Checkpoints::save_parts`]).
pub trait MultiStage {
    /// The module type of every part.
    type Model: Module;

    /// Which stage this is.
    fn name(&self) -> StageName;

    /// The optimisation loop settings.
    fn settings(&self) -> &LoopSettings;

    /// The parts with their initial weights on `device` (parameters requiring gradients), each
    /// with a fresh optimiser. Names are file-name stems (`student`, `fake_score`).
    fn init_parts(&self, device: &Device) -> TrainResult<Vec<Part<Self::Model>>>;

    /// Runs optimiser step `step` (0-based) at learning rate `lr` on `parts` (as returned by
    /// [`MultiStage::init_parts`] or a checkpoint, in that order), updating them in place, and
    /// returns the step's loss for the log. Everything random must be a pure function of the
    /// run seed and `step`.
    fn step(
        &self,
        parts: &mut [Part<Self::Model>],
        step: u64,
        lr: f64,
        device: &Device,
    ) -> TrainResult<StepRecord>;

    /// Called by [`train_multi_stage`] once the parts are ready, at `step` (the checkpoint's
    /// step they were loaded from, or 0 for fresh parts): where a stage restores the state it
    /// keeps beside its parts (the student's critic). Nothing by default.
    fn resumed(&self, _step: u64, _device: &Device) -> TrainResult<()> {
        Ok(())
    }

    /// Called by [`train_multi_stage`] just before the parts' checkpoint of `step` is written
    /// (`keep`: the checkpoints the stage keeps): where a stage saves the state it keeps beside
    /// its parts, so that every checkpoint of the parts has it. Nothing by default.
    fn checkpointing(&self, _step: u64, _keep: usize) -> TrainResult<()> {
        Ok(())
    }
}

/// What one step of a [`MultiStage`] reports.
pub struct StepRecord {
    /// The value logged as the step's loss.
    pub loss: f64,
    /// Named terms, for the log.
    pub terms: BTreeMap<String, f64>,
}

/// Runs (or resumes) a [`MultiStage`] exactly as [`train_stage`] runs a [`Stage`]: resume
/// from the newest checkpoint, step until the configured count or `stop`, append to
/// `loss.jsonl`, checkpoint every `checkpoint_every` steps and where it stops. A non-finite
/// loss or term is a [`TrainError::Config`] naming the step. Such a stage keeps no moving
/// average of its weights: [`LoopSettings::ema_decay`] set is a [`TrainError::Config`].
pub fn train_multi_stage<S: MultiStage>(
    stage: &S,
    run: &RunDir,
    device: &Device,
    stop: Stop,
    progress: &mut dyn FnMut(&LogRecord),
) -> TrainResult<StageOutcome<Vec<Part<S::Model>>>> {
    let settings = stage.settings().clone();
    if settings.ema_decay.is_some() {
        return Err(TrainError::config(
            format!("{}.ema_decay", stage.name().as_str()),
            "this stage keeps no moving average of its weights",
        ));
    }
    if settings.checkpoint_mean.is_some() {
        return Err(TrainError::config(
            format!("{}.checkpoint_mean", stage.name().as_str()),
            "this stage averages no checkpoints",
        ));
    }
    let dir = run.stage_dir(stage.name());
    let checkpoints = Checkpoints::new(&dir);
    checkpoints.remove_partial()?;
    let (mut parts, start) = match checkpoints.steps()?.last() {
        Some(&step) => (
            checkpoints.load_parts(step, stage.init_parts(device)?)?,
            step,
        ),
        None => (stage.init_parts(device)?, 0),
    };
    stage.resumed(start, device)?;
    let mut log = LossLog::open(&dir.join("loss.jsonl"), start)?;
    let end = stop
        .after_steps
        .map_or(settings.steps, |s| s.min(settings.steps));
    let mut step = start;
    while step < end {
        let t0 = Instant::now();
        let lr = settings.lr_at(step);
        let StepRecord { loss, terms } = stage.step(&mut parts, step, lr, device)?;
        if let Some((name, value)) = std::iter::once(("loss", &loss))
            .chain(terms.iter().map(|(k, v)| (k.as_str(), v)))
            .find(|(_, v)| !v.is_finite())
        {
            return Err(TrainError::config(
                format!("{}.lr", stage.name().as_str()),
                format!(
                    "`{name}` became {value} at step {} (diverged); lower the learning rate or resume from an earlier checkpoint",
                    step + 1
                ),
            ));
        }
        step += 1;
        let record = LogRecord {
            step,
            loss,
            terms,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        log.append(&record)?;
        progress(&record);
        let out_of_time = stop.deadline.is_some_and(|d| Instant::now() >= d);
        if step.is_multiple_of(settings.checkpoint_every) || step == end || out_of_time {
            stage.checkpointing(step, settings.keep_checkpoints)?;
            checkpoints.save_parts(&parts, step, settings.keep_checkpoints)?;
        }
        if out_of_time {
            break;
        }
    }
    Ok(StageOutcome {
        model: parts,
        average: None,
        step,
        resumed_from: start,
        finished: step >= settings.steps,
    })
}
