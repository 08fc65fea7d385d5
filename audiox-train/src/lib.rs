//! Training-side tools for `audiox`.
//!
//! The project trains its own small AudioX (the embedded demo model) on sound it renders
//! itself, so that no download is involved and every clip's content is known exactly. This
//! crate holds the parts that do not need a neural network:
//!
//! * [`corpus`]: a deterministic procedural corpus of short sound events (`beep`, `click`,
//!   `knock`, `chirp`, `thud`, `bell`, `whoosh`, `buzz`) with varied counts, pitch, loudness,
//!   order and onset times, each clip captioned from a small grammar ("three high beeps",
//!   "two knocks, then a low thud", "a bell at 4 seconds"), with a held-out caption set that
//!   the training stream never yields;
//! * [`metric`]: the instruction-following metric: events detected in generated audio (onsets
//!   from the energy envelope, a pitch estimate and a tonal/noisy class per event) and scored
//!   against the caption's scene (event-count accuracy, order accuracy, onset-time error, pitch
//!   accuracy);
//! * [`tokenizer`]: the demo model's small T5 (SentencePiece) vocabulary, one piece per
//!   caption word.
//!
//! With the feature `train`, the module `train` holds the resumable trainer (the VAE, teacher
//! and DMD student stages) and the `audiox-train` command runs it: `audiox-train --out DIR`
//! trains the demo model's recipe from nothing and exports it.
//!
//! ```
//! use audiox_train::corpus::{Corpus, CorpusConfig};
//! use audiox_train::metric::{detect_events, score_clip, DetectorConfig};
//!
//! let corpus = Corpus::new(CorpusConfig::default())?;
//! let clip = corpus.training_clip(0);
//! let found = detect_events(&clip.samples, clip.sample_rate, &DetectorConfig::default());
//! let score = score_clip(&clip.scene, &found, &DetectorConfig::default());
//! println!("{}: {} events found, count correct: {}", clip.caption, found.len(), score.count_correct);
//! # Ok::<(), audiox_train::Error>(())
//! ```
#![deny(missing_docs)]

pub mod corpus;
pub mod metric;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of its documented range.
    #[error("invalid {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// The offending value, as text.
        value: String,
        /// What the field must satisfy.
        reason: &'static str,
    },
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Encoding a WAV file failed.
    #[error("writing WAV {path}: {source}")]
    Wav {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: hound::Error,
    },
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
