//! The teacher's clip latents on disk, so that a resumed teacher run does not encode its
//! training clips again.
//!
//! The teacher trains on the posterior means of the frozen VAE encoder for corpus clips
//! ([`super::teacher`]). Encoding a demo clip costs about 0.17 s on one core, and a run of
//! 4,000 steps draws from 4,096 clips: a process that starts with an empty cache spends its
//! first few hundred steps encoding (3-6 s per step instead of about 2.4 s). A
//! [`LatentStore`] keeps the latents a run has computed in the run folder, in chunk files
//! written after each checkpoint, and hands them back to the next process.
//!
//! **Layout**: `teacher/latents/<key>/chunk-NNNNN.safetensors`, where `<key>` is the first 16
//! hex digits of the SHA-256 of the [`LatentKey`] (the VAE file's SHA-256, the corpus settings
//! and version, and the latent shape) as JSON. A VAE or corpus change therefore uses another folder, and the
//! old one is never read (delete it to reclaim the space). Each chunk holds `indices`
//! (I64 `[N]`, clip indices of the training stream) and `latents` (F32 `[N, C, L]`), with the
//! key as JSON metadata, checked on reading: a chunk that is unreadable, of another key or of
//! another shape is an error naming the file (delete it: its latents are encoded again).
//!
//! The stored values are the ones the first process computed, so a resumed run trains on
//! exactly the latents of an uninterrupted one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{sha256, write_atomic};
use super::error::{TrainError, TrainResult};
use super::run::CorpusSettings;

/// What the stored latents depend on: a store only reads chunks written under an equal key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentKey {
    /// SHA-256 of the VAE weights file whose encoder computed the latents.
    pub vae_sha256: String,
    /// The corpus the clips come from.
    pub corpus: CorpusSettings,
    /// [`crate::corpus::CORPUS_VERSION`] of the code that rendered them (0 in stores written
    /// before the field existed, which are never read again).
    #[serde(default)]
    pub corpus_version: u32,
    /// Audio samples per clip fed to the encoder (the model's `sample_size`).
    pub samples: usize,
    /// Latent `[channels, length]` per clip.
    pub latent: [usize; 2],
}

impl LatentKey {
    /// The key's folder name: the first 16 hex digits of the SHA-256 of its JSON.
    pub fn folder_name(&self) -> TrainResult<String> {
        let json = serde_json::to_string(self)
            .map_err(|e| TrainError::config("teacher", format!("latent key: {e}")))?;
        Ok(sha256(json.as_bytes())[..16].to_string())
    }
}

/// Clip latents of one [`LatentKey`] in a folder of chunk files; see the module docs.
#[derive(Debug)]
pub struct LatentStore {
    dir: PathBuf,
    key: LatentKey,
    next_chunk: u32,
}

impl LatentStore {
    /// The store of `key` under `root` (`root/<key folder>/`), and every latent in it by clip
    /// index. The folder is created when the first chunk is written.
    pub fn open(root: &Path, key: LatentKey) -> TrainResult<(Self, HashMap<u64, Vec<f32>>)> {
        let dir = root.join(key.folder_name()?);
        let mut latents = HashMap::new();
        let mut next_chunk = 0;
        if dir.is_dir() {
            let mut chunks = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))? {
                let entry = entry.map_err(|e| TrainError::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(n) = chunk_number(&name) {
                    chunks.push((n, entry.path()));
                }
            }
            chunks.sort();
            for (n, path) in chunks {
                for (index, values) in read_chunk(&path, &key)? {
                    latents.insert(index, values);
                }
                next_chunk = n + 1;
            }
        }
        Ok((
            LatentStore {
                dir,
                key,
                next_chunk,
            },
            latents,
        ))
    }

    /// The folder the chunks go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `entries` (clip index, latent of `C * L` values) as the next chunk, atomically
    /// and without replacing a chunk another process wrote meanwhile; nothing when `entries` is
    /// empty. Returns the file written.
    pub fn append(&mut self, entries: &[(u64, &[f32])]) -> TrainResult<Option<PathBuf>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let path = self
            .dir
            .join(format!("chunk-{:05}.safetensors", self.next_chunk));
        let [c, l] = self.key.latent;
        let per = c * l;
        let mut indices = Vec::with_capacity(entries.len() * 8);
        let mut values = Vec::with_capacity(entries.len() * per * 4);
        for (index, latent) in entries {
            if latent.len() != per {
                return Err(TrainError::checkpoint(
                    &path,
                    format!(
                        "the latent of clip {index} has {} values, not {c} x {l}",
                        latent.len()
                    ),
                ));
            }
            let index = i64::try_from(*index).map_err(|_| {
                TrainError::checkpoint(&path, format!("clip index {index} does not fit an i64"))
            })?;
            indices.extend_from_slice(&index.to_le_bytes());
            values.extend(latent.iter().flat_map(|v| v.to_le_bytes()));
        }
        let bad = |e: safetensors::SafeTensorError| TrainError::checkpoint(&path, e.to_string());
        let views = vec![
            (
                "indices".to_string(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::I64,
                    vec![entries.len()],
                    &indices,
                )
                .map_err(bad)?,
            ),
            (
                "latents".to_string(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    vec![entries.len(), c, l],
                    &values,
                )
                .map_err(bad)?,
            ),
        ];
        let key = serde_json::to_string(&self.key)
            .map_err(|e| TrainError::checkpoint(&path, e.to_string()))?;
        let data = safetensors::serialize(views, Some(HashMap::from([("key".to_string(), key)])))
            .map_err(bad)?;
        // Another process may write chunks into the same folder (`--encode-latents` beside a
        // paused or running teacher): take the first number no file holds, and never replace
        // a chunk (the temporary file is linked to its name, which fails if the name exists).
        let tmp = self
            .dir
            .join(format!(".chunk-{}.partial", std::process::id()));
        write_atomic(&tmp, &data)?;
        let path = loop {
            let path = self
                .dir
                .join(format!("chunk-{:05}.safetensors", self.next_chunk));
            self.next_chunk += 1;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => break path,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(TrainError::io(&path, e));
                }
            }
        };
        std::fs::remove_file(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        Ok(Some(path))
    }
}

/// `n` of a file named `chunk-n.safetensors`.
fn chunk_number(name: &str) -> Option<u32> {
    name.strip_prefix("chunk-")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

/// The (clip index, latent) entries of one chunk file, checked against `key`.
fn read_chunk(path: &Path, key: &LatentKey) -> TrainResult<Vec<(u64, Vec<f32>)>> {
    let bad = |reason: String| {
        TrainError::checkpoint(
            path,
            format!("{reason}; delete it (its latents are encoded again)"),
        )
    };
    let data = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&data)
        .map_err(|e| bad(format!("unreadable ({e})")))?;
    let stored: LatentKey = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("key"))
        .ok_or_else(|| bad("no `key` metadata".into()))
        .and_then(|k| serde_json::from_str(k).map_err(|e| bad(format!("key: {e}"))))?;
    if &stored != key {
        return Err(bad(format!(
            "written for {stored:?}, this folder is for {key:?}"
        )));
    }
    let tensors = safetensors::SafeTensors::deserialize(&data)
        .map_err(|e| bad(format!("unreadable ({e})")))?;
    let indices = tensors
        .tensor("indices")
        .map_err(|e| bad(format!("`indices`: {e}")))?;
    let latents = tensors
        .tensor("latents")
        .map_err(|e| bad(format!("`latents`: {e}")))?;
    let [c, l] = key.latent;
    let n = indices.shape().first().copied().unwrap_or(0);
    if indices.dtype() != safetensors::Dtype::I64
        || latents.dtype() != safetensors::Dtype::F32
        || indices.shape() != [n]
        || latents.shape() != [n, c, l]
    {
        return Err(bad(format!(
            "`indices` {:?} {:?} and `latents` {:?} {:?}, expected I64 [N] and F32 [N, {c}, {l}]",
            indices.dtype(),
            indices.shape(),
            latents.dtype(),
            latents.shape()
        )));
    }
    let per = c * l;
    let values: Vec<f32> = latents
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    indices
        .data()
        .chunks_exact(8)
        .enumerate()
        .map(|(k, b)| {
            let index = i64::from_le_bytes(b.try_into().expect("chunks of 8 bytes"));
            let index =
                u64::try_from(index).map_err(|_| bad(format!("negative clip index {index}")))?;
            Ok((index, values[k * per..(k + 1) * per].to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(vae: &str) -> LatentKey {
        LatentKey {
            vae_sha256: vae.into(),
            corpus: CorpusSettings {
                sample_rate: 16_000,
                duration_s: 1.0,
                seed: 3,
                held_out_every: 10,
                timing_jitter: 1.0,
            },
            corpus_version: crate::corpus::CORPUS_VERSION,
            samples: 16_000,
            latent: [2, 3],
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("audiox-latent-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn chunks_round_trip_and_accumulate_across_opens() {
        let root = temp("round-trip");
        let (mut store, empty) = LatentStore::open(&root, key("a")).unwrap();
        assert!(empty.is_empty());
        let a = [1.0f32, -2.0, 3.5, 0.0, 1e-7, f32::MAX];
        let b = [0.25f32; 6];
        store.append(&[(7, &a), (40_000, &b)]).unwrap();
        assert_eq!(store.append(&[]).unwrap(), None);
        let (mut store, got) = LatentStore::open(&root, key("a")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[&7], a);
        assert_eq!(got[&40_000], b);
        let c = [9.0f32; 6];
        let second = store.append(&[(3, &c)]).unwrap().unwrap();
        assert!(second.ends_with("chunk-00001.safetensors"), "{second:?}");
        let (_, got) = LatentStore::open(&root, key("a")).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[&3], c);
        // Another VAE reads another folder.
        let (other, got) = LatentStore::open(&root, key("b")).unwrap();
        assert!(got.is_empty());
        assert_ne!(other.dir(), store.dir());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn two_writers_of_one_folder_never_replace_each_others_chunks() {
        let root = temp("two-writers");
        // Both open the empty folder, so both would call their first chunk 00000.
        let (mut first, _) = LatentStore::open(&root, key("a")).unwrap();
        let (mut second, _) = LatentStore::open(&root, key("a")).unwrap();
        let a = first.append(&[(1, &[1.0f32; 6])]).unwrap().unwrap();
        let b = second.append(&[(2, &[2.0f32; 6])]).unwrap().unwrap();
        let c = first.append(&[(3, &[3.0f32; 6])]).unwrap().unwrap();
        assert!(a.ends_with("chunk-00000.safetensors"), "{a:?}");
        assert!(b.ends_with("chunk-00001.safetensors"), "{b:?}");
        assert!(c.ends_with("chunk-00002.safetensors"), "{c:?}");
        let (_, got) = LatentStore::open(&root, key("a")).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[&2], [2.0f32; 6]);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(first.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_wrong_length_latent_is_refused() {
        let root = temp("length");
        let (mut store, _) = LatentStore::open(&root, key("a")).unwrap();
        let err = store.append(&[(1, &[0.0f32; 5])]).unwrap_err();
        assert!(err.to_string().contains("5 values"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_corrupt_or_foreign_chunk_is_an_error_naming_the_file() {
        let root = temp("corrupt");
        let (mut store, _) = LatentStore::open(&root, key("a")).unwrap();
        let path = store.append(&[(1, &[1.0f32; 6])]).unwrap().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let err = LatentStore::open(&root, key("a")).unwrap_err().to_string();
        assert!(err.contains("chunk-00000.safetensors"), "{err}");
        assert!(err.contains("delete it"), "{err}");

        // A chunk of another key copied into this folder.
        let (mut other, _) = LatentStore::open(&root, key("b")).unwrap();
        let foreign = other.append(&[(1, &[1.0f32; 6])]).unwrap().unwrap();
        std::fs::copy(&foreign, &path).unwrap();
        let err = LatentStore::open(&root, key("a")).unwrap_err().to_string();
        assert!(err.contains("written for"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
