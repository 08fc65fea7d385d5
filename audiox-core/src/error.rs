//! The one error type of the workspace.
//!
//! Every fallible function of every `audiox` crate returns [`Result`]. Variants carry the context
//! a user needs to act on the error: the file, the weight key, the expected and found shape or
//! dtype, the config field.

use std::path::PathBuf;

/// Result alias used across the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `audiox`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system level I/O failure on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A configuration file could not be parsed or holds an invalid value.
    #[error("config {}: field `{field}`: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into()))]
    Config {
        /// The config file, when it came from one.
        path: Option<PathBuf>,
        /// Dotted path of the offending field (`model.diffusion.config.embed_dim`).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A weight file is not readable as the format it claims to be (truncated, corrupt,
    /// not a checkpoint at all).
    #[error("weights {path}: {message}")]
    WeightFile {
        /// The weight file.
        path: PathBuf,
        /// What the reader found.
        message: String,
    },

    /// A tensor is stored with an element type the loader cannot convert to float.
    #[error("weights {path}: tensor `{key}` has unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The weight file.
        path: PathBuf,
        /// The tensor name inside the file.
        key: String,
        /// The dtype found.
        dtype: String,
    },

    /// A weight the model needs is not in any of the given files.
    #[error(
        "missing weight `{key}` (needed by `{param}`) in {}",
        sources_display(sources)
    )]
    MissingWeight {
        /// The official (checkpoint) name that was looked up.
        key: String,
        /// Our parameter that needed it.
        param: String,
        /// The files searched.
        sources: Vec<PathBuf>,
    },

    /// A weight exists but has another shape than the model expects.
    #[error("weight `{key}` in {}: expected shape {expected:?}, found {found:?}", path.display())]
    ShapeMismatch {
        /// The weight file.
        path: PathBuf,
        /// The tensor name inside the file.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },

    /// A tensor handed to a model has the wrong shape (a programming or input error caught
    /// before compute).
    #[error("{what}: expected shape {expected}, found {found:?}")]
    InputShape {
        /// Which input.
        what: String,
        /// Human-readable description of the expected shape (`[B, 64, 236]`).
        expected: String,
        /// The shape received.
        found: Vec<usize>,
    },

    /// An audio file could not be decoded.
    #[error("audio {}: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into()))]
    Audio {
        /// The audio file, when decoding from a file.
        path: Option<PathBuf>,
        /// What went wrong.
        message: String,
    },

    /// An image or video frame could not be read or has the wrong layout.
    #[error("image {}: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into()))]
    Image {
        /// The image file, when reading from a file.
        path: Option<PathBuf>,
        /// What went wrong.
        message: String,
    },

    /// The tokenizer could not be loaded or failed on a prompt.
    #[error("tokenizer {}: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<memory>".into()))]
    Tokenizer {
        /// The tokenizer.json file.
        path: Option<PathBuf>,
        /// What went wrong.
        message: String,
    },

    /// A replayed random draw did not match what the pipeline asked for (wrong kind, shape or
    /// order), or the recorded draws ran out.
    #[error("noise replay: {message}")]
    NoiseReplay {
        /// What was asked and what was recorded.
        message: String,
    },

    /// A value from code the caller plugged in (a custom sampler or noise source), or from the
    /// sampler's arithmetic, breaks what the pipeline relies on: a non-finite latent or noise,
    /// an integer outside the range asked for, a draw of the wrong length.
    #[error("{what}: {message}")]
    Contract {
        /// Whose value it is (`sampler `midpoint``, `noise source, draw `audio_mask_start``).
        what: String,
        /// What is wrong with it.
        message: String,
    },

    /// A request the loaded model cannot serve (duration, missing encoder, empty batch, ...).
    /// Raised before any compute.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// An external program (ffmpeg) is missing or failed.
    #[error("external tool `{tool}`: {message}")]
    ExternalTool {
        /// The program name.
        tool: String,
        /// What went wrong.
        message: String,
    },

    /// The caller cancelled the work through its cancellation token.
    #[error("cancelled after {completed_steps} of {total_steps} steps")]
    Cancelled {
        /// Steps finished before the cancellation was seen.
        completed_steps: usize,
        /// Steps the sampler would have run.
        total_steps: usize,
    },

    /// A golden fixture file is malformed (test support).
    #[error("fixture {}: {message}", path.display())]
    Fixture {
        /// The fixture file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn sources_display(sources: &[PathBuf]) -> String {
    if sources.is_empty() {
        return "<no weight file>".to_string();
    }
    sources
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A config error for `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            path: None,
            field: field.into(),
            message: message.into(),
        }
    }

    /// An input-shape error.
    pub fn input_shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: &[usize],
    ) -> Self {
        Error::InputShape {
            what: what.into(),
            expected: expected.into(),
            found: found.to_vec(),
        }
    }

    /// An [`Error::Contract`] error: `what` produced a value that breaks its contract.
    pub fn contract(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Contract {
            what: what.into(),
            message: message.into(),
        }
    }

    /// A weight-file format error.
    pub fn weight_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::WeightFile {
            path: path.into(),
            message: message.into(),
        }
    }
}
