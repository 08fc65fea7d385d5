//! Errors of the trainer.

use std::path::PathBuf;

/// Errors of the trainer (feature `train`).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing a file of the run directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint file is missing, truncated, corrupt or does not fit the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The run directory was started with another configuration.
    #[error(
        "{path} was written by a run with another configuration ({reason}); use a new --out folder or the original configuration"
    )]
    ConfigMismatch {
        /// The run's stored configuration file.
        path: PathBuf,
        /// The first difference found.
        reason: String,
    },
    /// A run configuration value is invalid.
    #[error("run configuration: {field}: {reason}")]
    Config {
        /// The field (dotted path).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The model configuration (official schema) or a model component refused its input.
    #[error(transparent)]
    Model(#[from] audiox_core::Error),
    /// The corpus refused its configuration.
    #[error(transparent)]
    Corpus(#[from] crate::Error),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint error on `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A configuration error on `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TrainError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The trainer's result type.
pub type TrainResult<T> = std::result::Result<T, TrainError>;
