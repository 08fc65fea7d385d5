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

    /// A request value or an input's size is outside the accepted range, or a sample is not a
    /// finite number (see the limits table in `docs/guide.md`). Raised before the work that the
    /// value would size.
    #[error("{field} = {value}: {limit}")]
    OutOfRange {
        /// The request field, option or input property (`steps`, `audio prompt sample rate`).
        field: String,
        /// The value received.
        value: String,
        /// The accepted range (`at most 1000`, `a finite number`).
        limit: String,
    },
    /// An external program (ffmpeg) is missing or failed.
    #[error("external tool `{tool}`: {message}")]
    ExternalTool {
        /// The program name.
        tool: String,
        /// What went wrong.
        message: String,
    },

    /// A file of a model repository could not be fetched from the Hugging Face Hub (or found
    /// in its cache when offline).
    #[error("hub {repo}@{revision}: `{file}`: {reason}")]
    Download {
        /// The repository (`HKUSTAudio/AudioX-Turbo`).
        repo: String,
        /// The revision asked for (branch, tag or commit).
        revision: String,
        /// The file inside the repository (`pretransform/vae.ckpt`); empty for the repository
        /// listing.
        file: String,
        /// What went wrong.
        reason: DownloadFailure,
    },

    /// A downloaded file does not have the sha256 the hub announced for it. The file was
    /// deleted; nothing corrupt is left in the cache.
    #[error(
        "hub {repo}: `{file}`: downloaded bytes have sha256 {found}, the hub announced {expected}; \
         the file was deleted, run again to download it anew"
    )]
    Checksum {
        /// The repository.
        repo: String,
        /// The file inside the repository.
        file: String,
        /// The sha256 the hub announced (`X-Linked-Etag`).
        expected: String,
        /// The sha256 of the bytes received.
        found: String,
    },

    /// The embedded demo model was asked for (`AudioX::demo()`) but this build carries none:
    /// the `demo` feature of `audiox` is off, or the `audiox-demo` crate was built without its
    /// assets (the trained files are produced by `audiox-train`; see `docs/weights.md`).
    #[error("no embedded demo model: {reason}")]
    DemoModelMissing {
        /// Why there is none and how to produce it.
        reason: String,
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

/// Why a hub download failed (see [`Error::Download`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownloadFailure {
    /// The repository, revision or file does not exist (HTTP 404), or is not in the repository
    /// listing.
    NotFound,
    /// The hub refused access (HTTP 401/403): a private or gated repository needs a token
    /// (`HF_TOKEN`) that has been granted access.
    Unauthorized(u16),
    /// Another HTTP status.
    Http(u16),
    /// Offline mode (`HF_HUB_OFFLINE=1`) and the file is not in the cache.
    NotCached,
    /// The connection failed or ended early; a partial download is kept and resumed next time.
    Network(String),
    /// The server answered without the headers of the hub protocol, or with values that do
    /// not fit together.
    Protocol(String),
    /// Writing the cache failed.
    Cache(String),
}

impl std::fmt::Display for DownloadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadFailure::NotFound => f.write_str("not found on the hub"),
            DownloadFailure::Unauthorized(code) => write!(
                f,
                "access refused (HTTP {code}): set HF_TOKEN (or the builder's token) to a token \
                 with access to this repository"
            ),
            DownloadFailure::Http(code) => write!(f, "HTTP status {code}"),
            DownloadFailure::NotCached => f.write_str(
                "not in the Hugging Face cache and offline mode is on (HF_HUB_OFFLINE=1); run \
                 once online to download it",
            ),
            DownloadFailure::Network(m) => write!(f, "network error: {m}"),
            DownloadFailure::Protocol(m) => write!(f, "unexpected hub answer: {m}"),
            DownloadFailure::Cache(m) => write!(f, "cache: {m}"),
        }
    }
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

    /// An [`Error::OutOfRange`] for `field`.
    pub fn out_of_range(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        limit: impl Into<String>,
    ) -> Self {
        Error::OutOfRange {
            field: field.into(),
            value: value.to_string(),
            limit: limit.into(),
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
