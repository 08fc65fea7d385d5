//! A checkpoint folder held in memory: the files of the official layout as byte slices, for a
//! model embedded in the binary (the demo model, [`crate::demo`]) or read by the caller from
//! somewhere other than a file system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use audiox_core::weights::{StateDict, WeightBytes};
use audiox_core::{Error, Result};

/// The files of a checkpoint folder in the official layout, held in memory and keyed by their
/// path relative to the folder (`config.json`, `audiox_turbo/audiox_turbo.safetensors`, ...).
/// Build a model from it with [`crate::AudioXBuilder::checkpoint_memory`].
///
/// Weights must be safetensors (torch pickles need a file: convert them first with
/// `examples/convert.rs`). The files read, by path:
///
/// | path | what | needed |
/// |---|---|---|
/// | `config.json` | model config (official schema) | yes |
/// | `audiox_turbo/audiox_turbo.safetensors` | student | unless the teacher is chosen |
/// | `pretrained_ckpt/pretrained_ckpt.safetensors` | teacher | with [`crate::DenoiserKind::Teacher`] |
/// | `pretransform/vae.safetensors` | VAE | yes |
/// | `t5-base/config.json`, `t5-base/model.safetensors`, `t5-base/tokenizer.json` | T5 | yes |
/// | `clip-vit-base-patch32/config.json` | CLIP sizes | yes |
/// | `clip-vit-base-patch32/model.safetensors` | CLIP weights | no (the student may carry them) |
/// | `synchformer/synchformer_state_dict.safetensors` | Synchformer | video requests only |
///
/// ```
/// use audiox::MemoryCheckpoint;
/// static CONFIG: &[u8] = b"{}";
/// let ckpt = MemoryCheckpoint::new("my-model").with_file("config.json", CONFIG);
/// assert_eq!(ckpt.total_bytes(), 2);
/// assert!(ckpt.contains("config.json"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpoint {
    label: String,
    files: BTreeMap<String, WeightBytes>,
}

/// Paths of the official layout inside a [`MemoryCheckpoint`].
pub(crate) mod names {
    pub const CONFIG: &str = "config.json";
    pub const STUDENT: &str = "audiox_turbo/audiox_turbo.safetensors";
    pub const TEACHER: &str = "pretrained_ckpt/pretrained_ckpt.safetensors";
    pub const VAE: &str = "pretransform/vae.safetensors";
    pub const T5_CONFIG: &str = "t5-base/config.json";
    pub const T5_WEIGHTS: &str = "t5-base/model.safetensors";
    pub const T5_TOKENIZER: &str = "t5-base/tokenizer.json";
    pub const CLIP_CONFIG: &str = "clip-vit-base-patch32/config.json";
    pub const CLIP_WEIGHTS: &str = "clip-vit-base-patch32/model.safetensors";
    pub const SYNCHFORMER: &str = "synchformer/synchformer_state_dict.safetensors";
}

impl MemoryCheckpoint {
    /// An empty set; `label` names it in errors and load reports (each file appears as
    /// `label/path`).
    pub fn new(label: impl Into<String>) -> Self {
        MemoryCheckpoint {
            label: label.into(),
            files: BTreeMap::new(),
        }
    }

    /// `self` with the file at `path` (relative, `/`-separated) holding `bytes`
    /// (`&'static [u8]` from `include_bytes!` is not copied; a `Vec<u8>` is moved in).
    pub fn with_file(mut self, path: impl Into<String>, bytes: impl Into<WeightBytes>) -> Self {
        self.insert(path, bytes);
        self
    }

    /// Adds (or replaces) the file at `path`.
    pub fn insert(&mut self, path: impl Into<String>, bytes: impl Into<WeightBytes>) {
        self.files.insert(path.into(), bytes.into());
    }

    /// Reads every file under `dir` into memory (paths relative to `dir`). Mostly for tests
    /// and tools: a model on disk is better loaded with
    /// [`crate::AudioXBuilder::checkpoint_dir`], which maps the files instead of copying them.
    pub fn read_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut ckpt = MemoryCheckpoint::new(dir.display().to_string());
        let mut pending = vec![dir.to_path_buf()];
        while let Some(folder) = pending.pop() {
            let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&folder, e))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
                if kind.is_dir() {
                    pending.push(path);
                } else if kind.is_file() {
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    let rel = path.strip_prefix(dir).unwrap_or(&path);
                    let key: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    ckpt.insert(key.join("/"), bytes);
                }
            }
        }
        Ok(ckpt)
    }

    /// The label given at construction.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether a file is held at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// The bytes of the file at `path`.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(WeightBytes::as_slice)
    }

    /// Every file's path and size in bytes, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, usize)> {
        self.files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice().len()))
    }

    /// The size of all files together, in bytes.
    pub fn total_bytes(&self) -> usize {
        self.files.values().map(|b| b.as_slice().len()).sum()
    }

    /// How the file at `path` is named in errors and reports: `label/path`.
    pub(crate) fn display_path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("{}/{path}", self.label))
    }

    /// The bytes of a required file, or an error naming it.
    pub(crate) fn require(&self, path: &str, what: &str) -> Result<&WeightBytes> {
        self.files.get(path).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "no {what}: expected `{path}` in the in-memory checkpoint `{}`",
                self.label
            ))
        })
    }

    /// The text of a required file (UTF-8).
    pub(crate) fn require_text(&self, path: &str, what: &str) -> Result<&str> {
        let bytes = self.require(path, what)?;
        std::str::from_utf8(bytes.as_slice()).map_err(|e| {
            Error::io(
                self.display_path(path),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// A state dict of a required safetensors file.
    pub(crate) fn require_weights(&self, path: &str, what: &str) -> Result<StateDict> {
        let bytes = self.require(path, what)?.clone();
        StateDict::from_safetensors_bytes(self.display_path(path), bytes)
    }

    /// A state dict of an optional safetensors file.
    pub(crate) fn optional_weights(&self, path: &str) -> Result<Option<StateDict>> {
        match self.files.get(path) {
            Some(bytes) => Ok(Some(StateDict::from_safetensors_bytes(
                self.display_path(path),
                bytes.clone(),
            )?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_dir_keys_files_by_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t5-base")).unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("t5-base/tokenizer.json"), b"[1,2,3]").unwrap();
        let ckpt = MemoryCheckpoint::read_dir(dir.path()).unwrap();
        let files: Vec<_> = ckpt.files().collect();
        assert_eq!(
            files,
            vec![("config.json", 2), ("t5-base/tokenizer.json", 7)]
        );
        assert_eq!(ckpt.total_bytes(), 9);
        assert_eq!(ckpt.get("t5-base/tokenizer.json"), Some(&b"[1,2,3]"[..]));
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let ckpt = MemoryCheckpoint::new("demo").with_file(names::VAE, b"not safetensors".to_vec());
        let err = ckpt.require(names::STUDENT, "student").unwrap_err();
        assert!(err.to_string().contains(names::STUDENT), "{err}");
        let err = ckpt.require_weights(names::VAE, "VAE").unwrap_err();
        assert!(
            err.to_string()
                .contains("demo/pretransform/vae.safetensors"),
            "{err}"
        );
        assert!(ckpt.optional_weights(names::SYNCHFORMER).unwrap().is_none());
    }
}
