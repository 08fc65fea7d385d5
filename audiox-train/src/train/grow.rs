//! A teacher that starts from another run's trained teacher, optionally deeper
//! (`teacher.init_from`).
//!
//! Training the demo teacher from nothing costs about four hours on two cores, most of it the
//! layout pretraining of the text side (`docs/training.md`). To try a deeper DiT without paying
//! that again, a run can start its teacher from the newest checkpoint of another run's teacher
//! stage (its checkpoint mean or moving average where it saved one, its trained weights
//! otherwise) and add blocks to the DiT. Everything else (T5, MAF block, conditioners, the DiT's
//! input and output maps and its first blocks) is the source's, so the grown teacher starts
//! where the source ended.
//!
//! **The added blocks start as the identity**, so the grown teacher computes what the source
//! computed (to rounding) and the flow loss does not jump at the first step. A block of this
//! architecture adds three things to its input: the self-attention branch times `gate_msa`, the
//! feed-forward branch times `gate_mlp` (both gates from `adaLN_modulation`), and, ungated, the
//! degenerate cross-attention's per-head RMS-normalised key projection of the time token
//! (`docs/reference-model.md` 3.4, step 8). Zero `adaLN_modulation` weights and bias close both
//! gates (adaLN-Zero, as in DiT); the cross-attention term cannot be zeroed the same way (a zero
//! key projection is a zero term, but RMS normalisation divides by its tiny norm, so its first
//! update would jump to unit scale). So the blocks are added in **pairs whose key projections
//! are opposite** (`W` and `-W`, `W` seeded as any new weight): the normalisation is odd, so
//! their terms cancel exactly; while the gates are closed the two weights receive the same
//! gradient (the normalisation's Jacobian is even), so the pair parts smoothly from there.
//! The self-attention and feed-forward weights of the new blocks are drawn as in a fresh
//! teacher; they receive gradients once the gates open.
//!
//! The new blocks are appended after the source's. What may differ between the two runs: the
//! DiT's `depth` (deeper by an even number of blocks), the corpus, the stage settings (steps,
//! learning rate, batch, ...). What may not: anything else of the model, the T5 and CLIP
//! configurations and the tokenizer's slots and fill, checked before any weight is read.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::average::with_gradient_requirements_of;
use super::checkpoint::Checkpoints;
use super::error::{TrainError, TrainResult};
use super::run::{RunConfig, StageName};
use super::teacher::TeacherModel;
use audiox_mmdit::DitBlock;

/// JSON pointer of the DiT depth in a run's model configuration.
const DEPTH: &str = "/model/diffusion/config/depth";

/// Where a teacher's initial weights come from (`teacher.init_from`; absent, the default: a
/// seeded random initialisation). See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherInit {
    /// A run folder (absolute, or relative to this run's folder) whose `run.json` and teacher
    /// checkpoints are read: e.g. a committed `training-checkpoints/<run>/`, or the folder
    /// where this run trains its [`base`](Self::base) run.
    pub run: PathBuf,
    /// The configuration of a **base run** this run trains itself, in the folder `run`, before
    /// its own stages (`None`, the default: `run` holds a trained teacher already). The base
    /// run's VAE and teacher stages are trained there (its student stage never is), its VAE is
    /// imported into this run, and this run's teacher starts from the base's finished teacher
    /// ([`train_base`](super::pipeline::train_base)). So one run configuration describes a
    /// teacher trained in two phases, the second deeper than the first. A base run differs
    /// from this run only in the DiT's depth and its teacher and student sections (its seed,
    /// corpus and VAE section are this run's, its T5 and CLIP configurations and text slots
    /// and fill too), and starts its own teacher from random weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Box<RunConfig>>,
}

impl TeacherInit {
    /// Checks a base run against this run's configuration `run` (see [`TeacherInit::base`]);
    /// nothing to check without one.
    pub fn check(&self, run: &RunConfig) -> TrainResult<()> {
        let Some(base) = &self.base else {
            return Ok(());
        };
        let field = |name: &str| format!("teacher.init_from.base.{name}");
        base.validate()
            .map_err(|e| TrainError::config(field("*"), e.to_string()))?;
        if base.teacher.init_from.is_some() {
            return Err(TrainError::config(
                field("teacher.init_from"),
                "a base run starts its teacher from random weights",
            ));
        }
        if base.seed != run.seed {
            return Err(TrainError::config(
                field("seed"),
                format!("{} differs from this run's seed {}", base.seed, run.seed),
            ));
        }
        if base.corpus != run.corpus {
            return Err(TrainError::config(
                field("corpus"),
                "differs from this run's corpus (the base run's VAE is this run's)",
            ));
        }
        if base.vae != run.vae {
            return Err(TrainError::config(
                field("vae"),
                "differs from this run's vae section (the base run's VAE is this run's)",
            ));
        }
        if base.decoder.is_some() {
            return Err(TrainError::config(
                field("decoder"),
                "a base run trains its VAE and teacher only: set the decoder stage on this run",
            ));
        }
        blocks_to_add(base, run)?;
        Ok(())
    }
}

/// The DiT depth of a run's model configuration.
fn depth(run: &RunConfig, which: &str) -> TrainResult<usize> {
    run.model
        .pointer(DEPTH)
        .and_then(|d| d.as_u64())
        .map(|d| d as usize)
        .ok_or_else(|| {
            TrainError::config(
                "teacher.init_from",
                format!("the {which} run's model has no {DEPTH} (a whole number)"),
            )
        })
}

/// Checks that the teacher of `source` can start the teacher of `target` (see the module docs)
/// and returns the number of blocks to add.
pub fn blocks_to_add(source: &RunConfig, target: &RunConfig) -> TrainResult<usize> {
    let (from, to) = (depth(source, "source")?, depth(target, "this")?);
    if to < from || !(to - from).is_multiple_of(2) {
        return Err(TrainError::config(
            "teacher.init_from",
            format!(
                "the source teacher has {from} DiT blocks and this run {to}: a grown teacher \
                 adds an even number of blocks (pairs start as the identity)"
            ),
        ));
    }
    let mut same_depth = source.model.clone();
    if let Some(d) = same_depth.pointer_mut(DEPTH) {
        *d = serde_json::json!(to);
    }
    if same_depth != target.model {
        return Err(TrainError::config(
            "teacher.init_from",
            "the source run's model differs from this run's in more than the DiT depth",
        ));
    }
    let (s, t) = (&source.teacher, &target.teacher);
    for (field, same) in [
        ("t5", s.t5 == t.t5),
        ("clip", s.clip == t.clip),
        ("text_slots", s.text_slots == t.text_slots),
        ("text_fill", s.text_fill == t.text_fill),
    ] {
        if !same {
            return Err(TrainError::config(
                "teacher.init_from",
                format!("the source run's teacher.{field} differs from this run's"),
            ));
        }
    }
    Ok(to - from)
}

/// The run folder `init` names, resolved against `run_root` when relative.
pub fn source_root(init: &TeacherInit, run_root: &Path) -> PathBuf {
    if init.run.is_absolute() {
        init.run.clone()
    } else {
        run_root.join(&init.run)
    }
}

/// The teacher this run starts from: the source run's teacher weights with the DiT grown to
/// `fresh`'s depth (`fresh`: this run's seeded random teacher, on the autodiff `device`, which
/// gives the added blocks' weights). Reads only the source's `run.json` and the newest teacher
/// checkpoint's weights (no optimiser state: a committed folder without `optim.bpk` serves).
/// Errors: the configurations disagree ([`blocks_to_add`]); the source holds no teacher
/// checkpoint; a file missing, truncated or corrupt (named).
pub fn grown_teacher(
    init: &TeacherInit,
    run_root: &Path,
    target: &RunConfig,
    fresh: TeacherModel,
    device: &Device,
) -> TrainResult<TeacherModel> {
    let root = source_root(init, run_root);
    let source = RunConfig::from_file(root.join("run.json"))?;
    blocks_to_add(&source, target)?;
    let dir = root.join(StageName::Teacher.as_str());
    let checkpoints = Checkpoints::new(&dir);
    let Some(&step) = checkpoints.steps()?.last() else {
        return Err(TrainError::config(
            "teacher.init_from",
            format!("{} holds no teacher checkpoint", dir.display()),
        ));
    };
    if let Some(base) = &init.base
        && step < base.teacher.optim.steps
    {
        return Err(TrainError::config(
            "teacher.init_from",
            format!(
                "the base run's teacher ({}) is at step {step} of {}: finish the base run first \
                 (--stage base)",
                dir.display(),
                base.teacher.optim.steps
            ),
        ));
    }
    let trained = checkpoints.load_model(step, TeacherModel::init(&source, device)?)?;
    let weights = match checkpoints.load_average(step, TeacherModel::init(&source, device)?)? {
        Some(average) => with_gradient_requirements_of(average, &trained),
        None => trained,
    };
    grow(weights, fresh)
}

/// `source` with the DiT blocks of `fresh` past the source's depth appended, each pair turned
/// into an identity pair (see the module docs). Errors if the extra blocks are odd in number.
pub fn grow(mut source: TeacherModel, fresh: TeacherModel) -> TrainResult<TeacherModel> {
    let have = source.dit.blocks.len();
    let extra: Vec<DitBlock> = fresh.dit.blocks.into_iter().skip(have).collect();
    if !extra.len().is_multiple_of(2) {
        return Err(TrainError::config(
            "teacher.init_from",
            format!("{} blocks to add: an even number is needed", extra.len()),
        ));
    }
    let mut extra = extra.into_iter();
    while let (Some(first), Some(second)) = (extra.next(), extra.next()) {
        let (first, second) = identity_pair(first, second);
        source.dit.blocks.push(first);
        source.dit.blocks.push(second);
    }
    Ok(source)
}

/// Two blocks whose sum of effects is nothing: both modulations zero (gates closed), the second
/// block's time key projection the negation of the first's.
fn identity_pair(mut first: DitBlock, mut second: DitBlock) -> (DitBlock, DitBlock) {
    first.ada_ln_modulation.weight = zeroed(first.ada_ln_modulation.weight);
    first.ada_ln_modulation.bias = first.ada_ln_modulation.bias.map(zeroed);
    second.ada_ln_modulation.weight = zeroed(second.ada_ln_modulation.weight);
    second.ada_ln_modulation.bias = second.ada_ln_modulation.bias.map(zeroed);
    let key = first.cross_attn.to_kv.weight.val();
    second.cross_attn.to_kv.weight = second.cross_attn.to_kv.weight.map(|old| {
        let require_grad = old.is_require_grad();
        key.neg().detach().set_require_grad(require_grad)
    });
    if let (Some(a), Some(b)) = (
        &first.cross_attn.to_kv.bias,
        &mut second.cross_attn.to_kv.bias,
    ) {
        let bias = a.val();
        *b = b.clone().map(|old| {
            let require_grad = old.is_require_grad();
            bias.neg().detach().set_require_grad(require_grad)
        });
    }
    (first, second)
}

/// `param` with every value zero (its id and gradient requirement kept).
fn zeroed<const D: usize>(param: Param<Tensor<D>>) -> Param<Tensor<D>> {
    param.map(|t| {
        let require_grad = t.is_require_grad();
        t.zeros_like().detach().set_require_grad(require_grad)
    })
}
