//! Checkpoints: model weights, optimiser state and position, written atomically.
//!
//! A stage's checkpoints live in `<stage>/checkpoints/step-NNNNNNNN/`:
//!
//! * `model.bpk`: the module in burn's burnpack format (it keeps each parameter's id, which the
//!   optimiser state is keyed by);
//! * `optim.bpk`: the Adam state (moments and step counts) in burnpack;
//! * `average.bpk` (only where the stage keeps a moving average of its weights,
//!   [`LoopSettings::ema_decay`](super::LoopSettings::ema_decay), and in the last checkpoint
//!   of a finished stage with
//!   [`LoopSettings::checkpoint_mean`](super::LoopSettings::checkpoint_mean)): that average or
//!   mean, in burnpack;
//! * `state.json`: the step reached, and the byte length and SHA-256 of every file.
//!
//! The files are written into `.partial-step-NNNNNNNN/`, synced, and the folder is then renamed
//! to its final name, so a checkpoint folder exists whole or not at all; an interrupted write
//! leaves a `.partial-*` folder, removed on the next start. Loading checks the lengths and
//! hashes before parsing, so a truncated or corrupted file is an error that names the file,
//! never a panic. Data order and noise are pure functions of `(run seed, stage, step)`, so the
//! step is the whole data/RNG position: a resumed run draws exactly what an uninterrupted one
//! would.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{TrainError, TrainResult};

const MODEL_FILE: &str = "model.bpk";
const OPTIM_FILE: &str = "optim.bpk";
const AVERAGE_FILE: &str = "average.bpk";
const STATE_FILE: &str = "state.json";
const FORMAT: u32 = 1;

/// Writes `bytes` to `path` atomically (a synced temporary sibling, then a rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> TrainResult<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial"));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> TrainResult<()> {
    let mut f = fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
    f.write_all(bytes).map_err(|e| TrainError::io(path, e))?;
    f.sync_all().map_err(|e| TrainError::io(path, e))
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    bytes: u64,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
struct State {
    format: u32,
    step: u64,
    model: FileEntry,
    optim: FileEntry,
    /// The moving average of the weights (or the checkpoint mean), where the stage keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    average: Option<FileEntry>,
}

/// `state.json` of a checkpoint of several parts (see [`Checkpoints::save_parts`]).
#[derive(Serialize, Deserialize)]
struct PartsState {
    format: u32,
    step: u64,
    /// File name -> length and hash, for every part's model and optimiser file.
    parts: std::collections::BTreeMap<String, FileEntry>,
}

/// One trained part of a checkpoint of several parts: a model with its own optimiser.
pub struct Part<M> {
    /// The part's name (file names `<name>.model.bpk`, `<name>.optim.bpk`).
    pub name: String,
    /// The module.
    pub model: M,
    /// Its optimiser.
    pub optim: ModuleOptimizer,
}

/// A loaded checkpoint.
pub struct Loaded<M> {
    /// The module, its parameters (and their ids) from the checkpoint.
    pub model: M,
    /// The optimiser with its state from the checkpoint.
    pub optim: ModuleOptimizer,
    /// Optimiser steps done.
    pub step: u64,
    /// The checkpoint folder.
    pub dir: PathBuf,
}

/// The checkpoints of one stage.
#[derive(Clone, Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    /// Steps whose checkpoints are never deleted to keep the newest `keep`.
    protected: Vec<u64>,
}

impl Checkpoints {
    /// The checkpoints under `stage_dir/checkpoints`.
    pub fn new(stage_dir: &Path) -> Self {
        Checkpoints {
            dir: stage_dir.join("checkpoints"),
            protected: Vec::new(),
        }
    }

    /// The same checkpoints, where saving never deletes those of `steps` (the checkpoints a
    /// [`LoopSettings::checkpoint_mean`](super::LoopSettings::checkpoint_mean) averages):
    /// they are kept beside the newest `keep`.
    pub fn protecting(mut self, steps: Vec<u64>) -> Self {
        self.protected = steps;
        self
    }

    /// The folder of the checkpoint at `step`.
    pub fn path(&self, step: u64) -> PathBuf {
        self.dir.join(format!("step-{step:08}"))
    }

    /// Steps of the complete checkpoints present, ascending.
    ///
    /// A checkpoint's files lying directly in `checkpoints/` (copied one folder too high by
    /// hand) are an error rather than no checkpoint: a run would otherwise silently start
    /// again from step 0.
    pub fn steps(&self) -> TrainResult<Vec<u64>> {
        let stray = self.dir.join("state.json");
        if stray.exists() {
            return Err(TrainError::checkpoint(
                stray,
                "a checkpoint's files lie directly in checkpoints/, not in a step-NNNNNNNN/ \
                 folder; move them into the folder of the step their state.json names",
            ));
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TrainError::io(&self.dir, e)),
        };
        let mut steps = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| TrainError::io(&self.dir, e))?;
            let name = entry.file_name();
            if let Some(step) = name
                .to_str()
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    /// The newest checkpoint's step, `None` when there is none (errors as [`Checkpoints::steps`]).
    pub fn newest(&self) -> TrainResult<Option<u64>> {
        Ok(self.steps()?.last().copied())
    }

    /// Removes folders left by interrupted writes.
    pub fn remove_partial(&self) -> TrainResult<()> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".partial-") {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(|e| TrainError::io(&p, e))?;
            }
        }
        Ok(())
    }

    /// Writes the checkpoint at `step` atomically, then keeps only the newest `keep` (and the
    /// protected ones, [`Checkpoints::protecting`]).
    pub fn save<M: Module>(
        &self,
        model: &M,
        optim: &ModuleOptimizer,
        step: u64,
        keep: usize,
    ) -> TrainResult<PathBuf> {
        self.save_with_average(model, None, optim, step, keep)
    }

    /// [`Checkpoints::save`] with a moving average or mean of the weights (`average.bpk`)
    /// where `average` is given.
    pub fn save_with_average<M: Module>(
        &self,
        model: &M,
        average: Option<&M>,
        optim: &ModuleOptimizer,
        step: u64,
        keep: usize,
    ) -> TrainResult<PathBuf> {
        let final_dir = self.path(step);
        let partial = self.dir.join(format!(".partial-step-{step:08}"));
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
        }
        fs::create_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;

        let model_bytes = module_bytes(model, &partial.join(MODEL_FILE))?;
        let average_bytes = average
            .map(|a| module_bytes(a, &partial.join(AVERAGE_FILE)))
            .transpose()?;
        let optim_bytes = optim
            .into_bytes()
            .map_err(|e| TrainError::checkpoint(partial.join(OPTIM_FILE), e.to_string()))?;
        let state = State {
            format: FORMAT,
            step,
            model: FileEntry {
                bytes: model_bytes.len() as u64,
                sha256: sha256(&model_bytes),
            },
            optim: FileEntry {
                bytes: optim_bytes.len() as u64,
                sha256: sha256(&optim_bytes),
            },
            average: average_bytes.as_ref().map(|b| FileEntry {
                bytes: b.len() as u64,
                sha256: sha256(b),
            }),
        };
        write_synced(&partial.join(MODEL_FILE), &model_bytes)?;
        write_synced(&partial.join(OPTIM_FILE), &optim_bytes)?;
        if let Some(bytes) = &average_bytes {
            write_synced(&partial.join(AVERAGE_FILE), bytes)?;
        }
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| TrainError::checkpoint(partial.join(STATE_FILE), e.to_string()))?;
        write_synced(&partial.join(STATE_FILE), text.as_bytes())?;
        self.publish(&partial, final_dir, keep)
    }

    /// Renames the complete checkpoint folder `partial` to `final_dir` (replacing an older one
    /// of that step), syncs the folder, and deletes all but the newest `keep` checkpoints (and
    /// the protected ones, [`Checkpoints::protecting`]).
    fn publish(&self, partial: &Path, final_dir: PathBuf, keep: usize) -> TrainResult<PathBuf> {
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        }
        fs::rename(partial, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            // Makes the rename durable where the platform supports syncing a folder.
            let _ = d.sync_all();
        }
        let steps = self.steps()?;
        for old in steps.iter().rev().skip(keep.max(1)) {
            if self.protected.contains(old) {
                continue;
            }
            let p = self.path(*old);
            fs::remove_dir_all(&p).map_err(|e| TrainError::io(&p, e))?;
        }
        Ok(final_dir)
    }

    /// Loads the checkpoint at `step` into `model` (a freshly built module of the same
    /// architecture) and `optim` (a fresh optimiser of the same configuration).
    pub fn load<M: Module>(
        &self,
        step: u64,
        model: M,
        optim: ModuleOptimizer,
    ) -> TrainResult<Loaded<M>> {
        let dir = self.path(step);
        let state = self.state(step)?;
        // Both files are checked before either is parsed.
        let (model_path, optim_path) = (dir.join(MODEL_FILE), dir.join(OPTIM_FILE));
        let model_bytes = read_checked(&model_path, &state.model)?;
        let optim_bytes = read_checked(&optim_path, &state.optim)?;
        let model = load_module(model, model_bytes, &model_path)?;
        let optim = optim
            .from_bytes(Bytes::from_bytes_vec(optim_bytes))
            .map_err(|e| TrainError::checkpoint(&optim_path, e.to_string()))?;
        Ok(Loaded {
            model,
            optim,
            step,
            dir,
        })
    }

    /// Loads only the trained weights of the checkpoint at `step` into `model` (a freshly built
    /// module of the same architecture), without the optimiser state: for a later stage that
    /// uses these weights and never steps them. A checkpoint copied without its `optim.bpk` (as
    /// the committed `training-checkpoints/` folders keep them) serves here, not for resuming.
    pub fn load_model<M: Module>(&self, step: u64, model: M) -> TrainResult<M> {
        let state = self.state(step)?;
        let path = self.path(step).join(MODEL_FILE);
        load_module(model, read_checked(&path, &state.model)?, &path)
    }

    /// The moving average (or checkpoint mean) saved with the checkpoint at `step`, loaded into
    /// `model` (a freshly built module of the same architecture); `None` where the checkpoint
    /// holds none (its stage kept no average then).
    pub fn load_average<M: Module>(&self, step: u64, model: M) -> TrainResult<Option<M>> {
        let state = self.state(step)?;
        let Some(entry) = &state.average else {
            return Ok(None);
        };
        let path = self.path(step).join(AVERAGE_FILE);
        load_module(model, read_checked(&path, entry)?, &path).map(Some)
    }

    /// The checked `state.json` of the checkpoint at `step`.
    fn state(&self, step: u64) -> TrainResult<State> {
        let state_path = self.path(step).join(STATE_FILE);
        let text = fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
        let state: State = serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(&state_path, format!("unreadable: {e}")))?;
        if state.format != FORMAT {
            return Err(TrainError::checkpoint(
                &state_path,
                format!("format {} (this build reads {FORMAT})", state.format),
            ));
        }
        if state.step != step {
            return Err(TrainError::checkpoint(
                &state_path,
                format!("records step {} in the folder of step {step}", state.step),
            ));
        }
        Ok(state)
    }
}

/// `module` in burnpack bytes (`path`: the file they are for, named in errors).
fn module_bytes<M: Module>(module: &M, path: &Path) -> TrainResult<Bytes> {
    let mut store = BurnpackStore::from_bytes(None);
    module
        .save_into(&mut store)
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    store
        .get_bytes()
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))
}

/// Loads burnpack `bytes` (read from `path`) into `module`, which they must fit exactly.
fn load_module<M: Module>(mut module: M, bytes: Vec<u8>, path: &Path) -> TrainResult<M> {
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
    let applied = module
        .load_from(&mut store)
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    if !applied.errors.is_empty() || !applied.missing.is_empty() || !applied.unused.is_empty() {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "does not fit the model: {} errors, missing {:?}, unused {:?}",
                applied.errors.len(),
                applied.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
                applied.unused
            ),
        ));
    }
    Ok(module)
}

impl Checkpoints {
    /// Writes the checkpoint of a stage that trains several parts, each a model with its own
    /// optimiser (the DMD stage: the student and the fake-score model), atomically, then keeps
    /// only the newest `keep`. The folder holds `<name>.model.bpk` and `<name>.optim.bpk` per
    /// part and a `state.json` listing every file's length and SHA-256.
    pub fn save_parts<M: Module>(
        &self,
        parts: &[Part<M>],
        step: u64,
        keep: usize,
    ) -> TrainResult<PathBuf> {
        let final_dir = self.path(step);
        let partial = self.dir.join(format!(".partial-step-{step:08}"));
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
        }
        fs::create_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
        let mut entries = std::collections::BTreeMap::new();
        for part in parts {
            check_part_name(&part.name, &partial)?;
            let model_name = format!("{}.model.bpk", part.name);
            let optim_name = format!("{}.optim.bpk", part.name);
            let mut store = BurnpackStore::from_bytes(None);
            part.model
                .save_into(&mut store)
                .map_err(|e| TrainError::checkpoint(partial.join(&model_name), e.to_string()))?;
            let model_bytes = store
                .get_bytes()
                .map_err(|e| TrainError::checkpoint(partial.join(&model_name), e.to_string()))?;
            let optim_bytes = part
                .optim
                .into_bytes()
                .map_err(|e| TrainError::checkpoint(partial.join(&optim_name), e.to_string()))?;
            for (name, bytes) in [
                (model_name, &model_bytes[..]),
                (optim_name, &optim_bytes[..]),
            ] {
                write_synced(&partial.join(&name), bytes)?;
                let entry = FileEntry {
                    bytes: bytes.len() as u64,
                    sha256: sha256(bytes),
                };
                if entries.insert(name.clone(), entry).is_some() {
                    return Err(TrainError::checkpoint(
                        partial.join(&name),
                        "two parts of the checkpoint have the same name",
                    ));
                }
            }
        }
        let state = PartsState {
            format: FORMAT,
            step,
            parts: entries,
        };
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| TrainError::checkpoint(partial.join(STATE_FILE), e.to_string()))?;
        write_synced(&partial.join(STATE_FILE), text.as_bytes())?;
        self.publish(&partial, final_dir, keep)
    }

    /// Loads the checkpoint of several parts at `step` into `parts` (freshly built modules and
    /// optimisers of the same architecture and configuration, in any order). Every file is
    /// checked against `state.json` before it is parsed; a part missing from the checkpoint is
    /// an error naming its file.
    pub fn load_parts<M: Module>(
        &self,
        step: u64,
        parts: Vec<Part<M>>,
    ) -> TrainResult<Vec<Part<M>>> {
        let dir = self.path(step);
        let state_path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
        let state: PartsState = serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(&state_path, format!("unreadable: {e}")))?;
        if state.format != FORMAT {
            return Err(TrainError::checkpoint(
                &state_path,
                format!("format {} (this build reads {FORMAT})", state.format),
            ));
        }
        if state.step != step {
            return Err(TrainError::checkpoint(
                &state_path,
                format!("records step {} in the folder of step {step}", state.step),
            ));
        }
        let entry = |name: &str| {
            state.parts.get(name).ok_or_else(|| {
                TrainError::checkpoint(dir.join(name), "not listed in state.json (missing part)")
            })
        };
        let mut loaded = Vec::with_capacity(parts.len());
        for Part {
            name,
            mut model,
            optim,
        } in parts
        {
            let model_path = dir.join(format!("{name}.model.bpk"));
            let optim_path = dir.join(format!("{name}.optim.bpk"));
            let model_bytes = read_checked(&model_path, entry(&format!("{name}.model.bpk"))?)?;
            let optim_bytes = read_checked(&optim_path, entry(&format!("{name}.optim.bpk"))?)?;
            let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(model_bytes)));
            let applied = model
                .load_from(&mut store)
                .map_err(|e| TrainError::checkpoint(&model_path, e.to_string()))?;
            if !applied.errors.is_empty()
                || !applied.missing.is_empty()
                || !applied.unused.is_empty()
            {
                return Err(TrainError::checkpoint(
                    &model_path,
                    format!(
                        "does not fit the model: {} errors, missing {:?}, unused {:?}",
                        applied.errors.len(),
                        applied.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
                        applied.unused
                    ),
                ));
            }
            let optim = optim
                .from_bytes(Bytes::from_bytes_vec(optim_bytes))
                .map_err(|e| TrainError::checkpoint(&optim_path, e.to_string()))?;
            loaded.push(Part { name, model, optim });
        }
        Ok(loaded)
    }
}

/// A part name must be a plain file-name stem.
fn check_part_name(name: &str, dir: &Path) -> TrainResult<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(TrainError::checkpoint(
            dir,
            format!("part name {name:?}: use letters, digits, `_` or `-`"),
        ));
    }
    Ok(())
}

fn read_checked(path: &Path, entry: &FileEntry) -> TrainResult<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| TrainError::io(path, e))?;
    if bytes.len() as u64 != entry.bytes {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "{} bytes where state.json records {} (truncated?)",
                bytes.len(),
                entry.bytes
            ),
        ));
    }
    let digest = sha256(&bytes);
    if digest != entry.sha256 {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "SHA-256 {digest} differs from the {} recorded (corrupt)",
                entry.sha256
            ),
        ));
    }
    Ok(bytes)
}
