//! Converting a checkpoint folder (official `.ckpt`/`.pth`/`.bin` files) to safetensors in the
//! same layout: only the weights the model uses, weight norm fused, in f32, bf16 or f16, with a
//! manifest (`examples/convert.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::tensor::Device;
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};

use audiox_core::weights::{AppliedWeight, StateDict, fuse_weight_norm, resolve_official_keys};
use audiox_core::{Error, Result};

use crate::checkpoint::CheckpointPaths;
use crate::config::ModelConfig;
use crate::model::{AudioX, AudioXBuilder, PartConfigs, model_key_space};

/// Element type of the converted weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit float: the converted folder gives bit-identical audio.
    #[default]
    F32,
    /// bfloat16 (half the size; values rounded).
    Bf16,
    /// IEEE half (half the size; values rounded, range limited to +-65504).
    F16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "float16" | "half" => Ok(Precision::F16),
            other => Err(Error::InvalidRequest(format!(
                "precision `{other}`: expected f32, bf16 or f16"
            ))),
        }
    }
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// Every file written, relative to the output folder (the manifest last).
    pub files: Vec<PathBuf>,
    /// Tensors written, over all weight files.
    pub tensors: usize,
    /// Weight-norm pairs fused into one kernel.
    pub fused: usize,
}

/// `builder` with every path that `paths` sets.
pub(crate) fn with_paths(mut builder: AudioXBuilder, paths: &CheckpointPaths) -> AudioXBuilder {
    if let Some(p) = &paths.config {
        builder = builder.config(p);
    }
    if let Some(p) = &paths.student {
        builder = builder.student_checkpoint(p);
    }
    if let Some(p) = &paths.vae {
        builder = builder.vae_checkpoint(p);
    }
    if let Some(p) = &paths.synchformer {
        builder = builder.synchformer_checkpoint(p);
    }
    if let Some(p) = &paths.t5_dir {
        builder = builder.t5_dir(p);
    }
    if let Some(p) = &paths.clip_dir {
        builder = builder.clip_dir(p);
    }
    if let Some(p) = &paths.teacher {
        builder = builder.teacher_checkpoint(p);
    }
    builder
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The output name of a source weight file, by its role in `paths`.
fn output_name(paths: &CheckpointPaths, file: &Path) -> Option<&'static str> {
    let is = |p: &Option<PathBuf>| p.as_deref() == Some(file);
    let under = |d: &Option<PathBuf>| d.as_deref().is_some_and(|d| file.parent() == Some(d));
    if is(&paths.student) {
        Some("audiox_turbo/audiox_turbo.safetensors")
    } else if is(&paths.teacher) {
        Some("pretrained_ckpt/pretrained_ckpt.safetensors")
    } else if is(&paths.vae) {
        Some("pretransform/vae.safetensors")
    } else if is(&paths.synchformer) {
        Some("synchformer/synchformer_state_dict.safetensors")
    } else if under(&paths.t5_dir) {
        Some("t5-base/model.safetensors")
    } else if under(&paths.clip_dir) {
        Some("clip-vit-base-patch32/model.safetensors")
    } else {
        None
    }
}

/// The stored name of `key` in `dict`: itself, else the longest stored name it ends with (at a
/// `.`), for loaders that put a prefix before a file's names.
fn stored_name(dict: &StateDict, key: &str) -> Option<String> {
    if dict.get(key).is_some() {
        return Some(key.to_string());
    }
    key.match_indices('.')
        .map(|(i, _)| &key[i + 1..])
        .find(|tail| dict.get(tail).is_some())
        .map(str::to_string)
}

/// One output tensor: shape and f32 values.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Adds the tensors behind `applied` (read from `dict`) to `out`; weight-norm pairs fused.
fn collect(dict: &StateDict, applied: &[&AppliedWeight], out: &mut Tensors) -> Result<usize> {
    let mut fused = 0;
    for a in applied {
        let names: Vec<String> = a
            .keys
            .iter()
            .map(|k| {
                stored_name(dict, k).ok_or_else(|| {
                    Error::weight_file(
                        dict.path(),
                        format!("convert: `{k}` (for `{}`) not found in the file", a.param),
                    )
                })
            })
            .collect::<Result<_>>()?;
        match names.as_slice() {
            [g, v] if g.ends_with("weight_g") && v.ends_with("weight_v") => {
                let (_, gv) = dict.read_f32(g)?;
                let (shape, vv) = dict.read_f32(v)?;
                let w = fuse_weight_norm(&gv, &vv, shape.first().copied().unwrap_or(1));
                let name = g.trim_end_matches("_g").to_string();
                out.insert(name, (shape, w));
                fused += 1;
            }
            _ => {
                for name in names {
                    if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(name) {
                        let t = dict.read_f32(slot.key())?;
                        slot.insert(t);
                    }
                }
            }
        }
    }
    Ok(fused)
}

fn write_safetensors(
    tensors: &Tensors,
    precision: Precision,
    metadata: &BTreeMap<String, String>,
    path: &Path,
) -> Result<()> {
    let (dtype, bytes): (Dtype, Vec<Vec<u8>>) = match precision {
        Precision::F32 => (
            Dtype::F32,
            tensors
                .values()
                .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
                .collect(),
        ),
        Precision::Bf16 => (
            Dtype::BF16,
            tensors
                .values()
                .map(|(_, v)| {
                    v.iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect()
                })
                .collect(),
        ),
        Precision::F16 => (
            Dtype::F16,
            tensors
                .values()
                .map(|(_, v)| {
                    v.iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                        .collect()
                })
                .collect(),
        ),
    };
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, (shape, _)), b)| {
            TensorView::new(dtype, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::weight_file(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let metadata: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::weight_file(path, e.to_string()))?;
    let bytes = with_sorted_header(bytes);
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// The same safetensors bytes with the JSON header's keys in sorted order, so that writing the
/// same tensors twice gives the same bytes (the `safetensors` crate writes its metadata map in
/// hash order). For anyone writing files with `safetensors::serialize`: `convert` and the
/// trainer's exports pass their bytes through it.
///
/// The header keeps its length (the same keys and values, compact JSON, padded with spaces as
/// before), so the data offsets stand; bytes that are not a safetensors file, or whose sorted
/// header would be longer, are returned unchanged.
pub fn with_sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let Ok(mut sorted) = serde_json::to_vec(&sort_keys(value)) else {
        return bytes;
    };
    if sorted.len() > len {
        return bytes;
    }
    sorted.resize(len, b' ');
    bytes[8..8 + len].copy_from_slice(&sorted);
    bytes
}

/// `value` with every object's keys inserted in sorted order (so sorted whether or not
/// serde_json keeps insertion order).
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// Writes `paths`' model to `out` as safetensors in the official folder layout
/// (`audiox_turbo/audiox_turbo.safetensors`, `pretransform/vae.safetensors`,
/// `synchformer/...`, `t5-base/`, `clip-vit-base-patch32/`, `pretrained_ckpt/` when a teacher
/// is given, `config.json`), keeping only the weights the model loads (the load report's applied
/// weights), with weight norm fused, plus `manifest.json` (source files and their sha256,
/// precision, tool version). The folder loads through [`AudioXBuilder::checkpoint_dir`]; in f32
/// it gives bit-identical audio.
pub fn convert(paths: &CheckpointPaths, out: &Path, precision: Precision) -> Result<Conversion> {
    let device = Device::flex();
    let mut applied: Vec<AppliedWeight> = Vec::new();
    // The student model, then (when given) the teacher's own weights.
    let student_paths = CheckpointPaths {
        teacher: None,
        ..paths.clone()
    };
    applied.extend(
        with_paths(AudioX::builder(), &student_paths)
            .build()?
            .load_report()
            .applied
            .clone(),
    );
    if let Some(teacher) = &paths.teacher {
        let report = with_paths(AudioX::builder(), paths)
            .build()?
            .load_report()
            .applied
            .clone();
        applied.extend(report.into_iter().filter(|a| &a.file == teacher));
    }

    let config = match &paths.config {
        Some(p) => ModelConfig::from_file(p)?,
        None => ModelConfig::official(),
    };
    let clip_dir = paths
        .clip_dir
        .as_ref()
        .ok_or_else(|| Error::InvalidRequest("convert: no CLIP folder".into()))?;
    let t5_dir = paths
        .t5_dir
        .as_ref()
        .ok_or_else(|| Error::InvalidRequest("convert: no T5 folder".into()))?;
    let parts = PartConfigs::new(&config, clip_dir, t5_dir)?;
    let key_space = model_key_space(&parts, &device)?;

    let mut by_file: BTreeMap<PathBuf, Vec<&AppliedWeight>> = BTreeMap::new();
    for a in &applied {
        by_file.entry(a.file.clone()).or_default().push(a);
    }
    // A Hugging Face folder whose weights were all overridden still gets a (small) file.
    for dir in [&paths.t5_dir, &paths.clip_dir].into_iter().flatten() {
        if let Some(f) = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
        {
            by_file.entry(f).or_default();
        }
    }

    let mut written = Vec::new();
    let mut sources = serde_json::Map::new();
    let (mut tensors_total, mut fused_total) = (0, 0);
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("audiox_precision".to_string(), precision.to_string());
    meta.insert("audiox_weight_norm".to_string(), "fused".to_string());
    for (file, entries) in &by_file {
        let name = output_name(paths, file).ok_or_else(|| {
            Error::weight_file(file, "convert: a weight file outside the checkpoint layout")
        })?;
        let raw = StateDict::open(file)?;
        let dict = if paths.student.as_deref() == Some(file.as_path())
            || paths.teacher.as_deref() == Some(file.as_path())
        {
            resolve_official_keys(&raw, &key_space).0
        } else {
            raw
        };
        let mut tensors = Tensors::new();
        fused_total += collect(&dict, entries, &mut tensors)?;
        tensors_total += tensors.len();
        write_safetensors(&tensors, precision, &meta, &out.join(name))?;
        written.push(PathBuf::from(name));
        sources.insert(
            name.to_string(),
            serde_json::json!({
                "source": file.display().to_string(),
                "source_sha256": sha256_file(file)?,
                "tensors": tensors.len(),
            }),
        );
    }

    // The non-weight files, copied.
    let mut copies: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(c) = &paths.config {
        copies.push((c.clone(), "config.json"));
    }
    if let Some(d) = &paths.t5_dir {
        copies.push((d.join("config.json"), "t5-base/config.json"));
        copies.push((d.join("tokenizer.json"), "t5-base/tokenizer.json"));
    }
    copies.push((
        clip_dir.join("config.json"),
        "clip-vit-base-patch32/config.json",
    ));
    for (from, to) in copies {
        let target = out.join(to);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::copy(&from, &target).map_err(|e| Error::io(&from, e))?;
        sources.insert(
            to.to_string(),
            serde_json::json!({
                "source": from.display().to_string(),
                "source_sha256": sha256_file(&from)?,
            }),
        );
        written.push(PathBuf::from(to));
    }

    let manifest = serde_json::json!({
        "tool": "audiox convert",
        "version": env!("CARGO_PKG_VERSION"),
        "precision": precision.to_string(),
        "weight_norm": "fused",
        "tensors": tensors_total,
        "fused_weight_norm_pairs": fused_total,
        "files": sources,
    });
    let manifest_path = out.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::weight_file(&manifest_path, e.to_string()))?;
    fs::write(&manifest_path, text).map_err(|e| Error::io(&manifest_path, e))?;
    written.push(PathBuf::from("manifest.json"));
    Ok(Conversion {
        files: written,
        tensors: tensors_total,
        fused: fused_total,
    })
}
