//! The loss log: one JSON object per line (`loss.jsonl` in the stage folder), appended.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{TrainError, TrainResult};

/// One logged optimiser step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The step number, counted from 1 (the step just finished).
    pub step: u64,
    /// The total loss.
    pub loss: f64,
    /// The loss terms by name (before weighting).
    pub terms: std::collections::BTreeMap<String, f64>,
    /// The learning rate used.
    pub lr: f64,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
}

/// An append-only JSON-lines loss log.
#[derive(Debug)]
pub struct LossLog {
    path: PathBuf,
    file: fs::File,
}

impl LossLog {
    /// Opens `path` to continue after step `resume_step`: lines of later steps (written by an
    /// interrupted run after its last checkpoint) are dropped, so each step appears once.
    pub fn open(path: &Path, resume_step: u64) -> TrainResult<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        if path.exists() {
            let text = fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
            let kept: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<LogRecord>(l).is_ok_and(|r| r.step <= resume_step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            if kept.len() != text.len() {
                super::checkpoint::write_atomic(path, kept.as_bytes())?;
            }
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(LossLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record.
    pub fn append(&mut self, record: &LogRecord) -> TrainResult<()> {
        let line = serde_json::to_string(record)
            .map_err(|e| TrainError::io(&self.path, std::io::Error::other(e)))?;
        writeln!(self.file, "{line}").map_err(|e| TrainError::io(&self.path, e))
    }

    /// Every record in the log at `path`.
    pub fn read(path: &Path) -> TrainResult<Vec<LogRecord>> {
        let text = fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    TrainError::io(path, std::io::Error::other(format!("line {}: {e}", i + 1)))
                })
            })
            .collect()
    }
}
