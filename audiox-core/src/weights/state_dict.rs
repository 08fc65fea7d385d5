//! Reading the tensors of a weight file: safetensors or a torch zip pickle (`.ckpt`, `.pth`,
//! `.bin`), lazily, by name.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::store::pytorch_reader::{self, PickleValue, PytorchReader};

use crate::error::{Error, Result};

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoredDType {
    /// 64-bit float.
    F64,
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Any integer or boolean type (named), not convertible to a weight.
    Other(&'static str),
}

impl StoredDType {
    fn size(self) -> Option<usize> {
        match self {
            StoredDType::F64 => Some(8),
            StoredDType::F32 => Some(4),
            StoredDType::F16 | StoredDType::BF16 => Some(2),
            StoredDType::Other(_) => None,
        }
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredDType::F64 => f.write_str("float64"),
            StoredDType::F32 => f.write_str("float32"),
            StoredDType::F16 => f.write_str("float16"),
            StoredDType::BF16 => f.write_str("bfloat16"),
            StoredDType::Other(name) => f.write_str(name),
        }
    }
}

/// The container a [`StateDict`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// A `.safetensors` file (memory-mapped).
    Safetensors,
    /// A torch checkpoint (zip pickle, or a legacy pickle).
    Torch,
}

#[derive(Clone)]
enum Data {
    Torch(pytorch_reader::Tensor),
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        end: usize,
        /// A map of a file (its pages can be dropped after reading and fault back in from
        /// the page cache), not anonymous memory holding the only copy.
        file_backed: bool,
    },
    /// A slice of bytes held in memory (a safetensors file embedded with `include_bytes!`, or
    /// read by the caller).
    Memory {
        bytes: WeightBytes,
        start: usize,
        end: usize,
    },
}

/// The bytes of a weight file held in memory: `&'static [u8]` (a file embedded in the binary
/// with `include_bytes!`, not copied) or an owned buffer. Cheap to clone (shared).
///
/// ```
/// use audiox_core::weights::WeightBytes;
/// static EMBEDDED: &[u8] = b"not really a safetensors file";
/// let bytes = WeightBytes::from(EMBEDDED);
/// assert_eq!(bytes.as_slice().len(), EMBEDDED.len());
/// ```
#[derive(Clone)]
pub struct WeightBytes(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl WeightBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.as_slice().len())
    }
}

impl From<&'static [u8]> for WeightBytes {
    fn from(bytes: &'static [u8]) -> Self {
        WeightBytes(Arc::new(bytes))
    }
}

impl From<Vec<u8>> for WeightBytes {
    fn from(bytes: Vec<u8>) -> Self {
        WeightBytes(Arc::new(bytes))
    }
}

/// One stored tensor: metadata now, bytes on demand.
#[derive(Clone)]
pub struct StoredTensor {
    shape: Vec<usize>,
    dtype: StoredDType,
    data: Data,
}

impl fmt::Debug for StoredTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredTensor({} {:?})", self.dtype, self.shape)
    }
}

impl StoredTensor {
    /// The stored shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The stored element type.
    pub fn dtype(&self) -> StoredDType {
        self.dtype
    }

    /// Reads the values converted to f32 (f16/bf16 are exact in f32; f64 is rounded).
    pub fn to_f32(&self, file: &Path, key: &str) -> Result<Vec<f32>> {
        let Some(size) = self.dtype.size() else {
            return Err(Error::UnsupportedDType {
                path: file.to_path_buf(),
                key: key.to_string(),
                dtype: self.dtype.to_string(),
            });
        };
        let n: usize = self.shape.iter().product();
        let owned;
        let bytes: &[u8] = match &self.data {
            Data::Torch(t) => {
                owned = t
                    .read()
                    .map_err(|e| Error::weight_file(file, format!("reading `{key}`: {e}")))?;
                &owned
            }
            Data::Mapped {
                map, start, end, ..
            } => &map[*start..*end],
            Data::Memory { bytes, start, end } => &bytes.as_slice()[*start..*end],
        };
        if bytes.len() != n * size {
            return Err(Error::weight_file(
                file,
                format!(
                    "`{key}`: {} bytes stored for {n} {} values",
                    bytes.len(),
                    self.dtype
                ),
            ));
        }
        let out = match self.dtype {
            StoredDType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            StoredDType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StoredDType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StoredDType::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f32)
                .collect(),
            StoredDType::Other(_) => unreachable!("rejected above"),
        };
        self.release_pages();
        Ok(out)
    }
}

impl StoredTensor {
    /// Drops this tensor's pages of a file map from the process once its values are copied
    /// out, so loading a large safetensors file does not keep the whole file resident beside
    /// the model's own copy (the pages stay in the kernel's page cache and fault back in if
    /// read again). Without this, peak resident memory while loading is weights + file.
    fn release_pages(&self) {
        #[cfg(unix)]
        if let Data::Mapped {
            map,
            start,
            end,
            file_backed: true,
        } = &self.data
        {
            // SAFETY: `map` is a read-only shared map of a file: after MADV_DONTNEED the next
            // access reads the same bytes back from the file, so no reader can observe a
            // change. The range lies inside the map. Failure only means the pages stay.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, *start, end - start)
            };
        }
    }
}

/// The tensors of a safetensors file in `bytes` (header checked: every tensor's bytes lie
/// inside the file), each one's data made by `data(start, end)`.
fn safetensors_index(
    path: &Path,
    bytes: &[u8],
    data: impl Fn(usize, usize) -> Data,
) -> Result<BTreeMap<String, StoredTensor>> {
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::weight_file(path, format!("not a valid safetensors file: {e}")))?;
    let data_start = 8 + header_len;
    let mut tensors = BTreeMap::new();
    for (name, info) in metadata.tensors() {
        use safetensors::Dtype;
        let dtype = match info.dtype {
            Dtype::F64 => StoredDType::F64,
            Dtype::F32 => StoredDType::F32,
            Dtype::F16 => StoredDType::F16,
            Dtype::BF16 => StoredDType::BF16,
            Dtype::I64 => StoredDType::Other("int64"),
            Dtype::I32 => StoredDType::Other("int32"),
            Dtype::I16 => StoredDType::Other("int16"),
            Dtype::I8 => StoredDType::Other("int8"),
            Dtype::U8 => StoredDType::Other("uint8"),
            Dtype::BOOL => StoredDType::Other("bool"),
            _ => StoredDType::Other("an unsupported safetensors dtype"),
        };
        let (a, b) = info.data_offsets;
        let (start, end) = (data_start + a, data_start + b);
        if start > end || end > bytes.len() {
            return Err(Error::weight_file(
                path,
                format!("`{name}`: its bytes lie outside the file"),
            ));
        }
        tensors.insert(
            name,
            StoredTensor {
                shape: info.shape.clone(),
                dtype,
                data: data(start, end),
            },
        );
    }
    Ok(tensors)
}

/// The keys under which the official loader looks for a nested state dict, in its order.
pub const NESTED_STATE_DICT_KEYS: [&str; 4] =
    ["state_dict", "model", "student", "student_state_dict"];

/// All tensors of one weight file, by name.
#[derive(Clone)]
pub struct StateDict {
    path: PathBuf,
    format: WeightFormat,
    nested_under: Option<String>,
    tensors: BTreeMap<String, StoredTensor>,
}

impl fmt::Debug for StateDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateDict")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("nested_under", &self.nested_under)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl StateDict {
    /// Opens a weight file the way the official loader does: safetensors as is; a torch
    /// checkpoint whose top level is a dict holding a dict under `state_dict`, `model`,
    /// `student` or `student_state_dict` (first present, in that order) is read from that inner
    /// dict, otherwise from the top level.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut header = [0u8; 16];
        let read = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut total = 0;
            loop {
                let n = f
                    .read(&mut header[total..])
                    .map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    break;
                }
                total += n;
                if total == header.len() {
                    break;
                }
            }
            total
        };
        if read == 0 {
            return Err(Error::weight_file(path, "the file is empty"));
        }
        if header.starts_with(b"PK") || !looks_like_safetensors(&header[..read]) {
            Self::open_torch(path)
        } else {
            Self::open_safetensors(path)
        }
    }

    /// Opens a safetensors file (memory-mapped; tensors are read on demand).
    pub fn open_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and the file is not modified while mapped (a weight file
        // changed under a running process is outside what we can defend against).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let map = Arc::new(map);
        let tensors = safetensors_index(path, &map, |start, end| Data::Mapped {
            map: map.clone(),
            start,
            end,
            file_backed: true,
        })?;
        Ok(StateDict {
            path: path.to_path_buf(),
            format: WeightFormat::Safetensors,
            nested_under: None,
            tensors,
        })
    }

    /// Reads a safetensors file held in memory (for instance embedded in the binary with
    /// `include_bytes!`): nothing is copied, tensors are converted on demand as with
    /// [`StateDict::open_safetensors`]. `label` names the file in errors and load reports.
    ///
    /// Torch checkpoints are not read from memory (their reader needs a file): convert them
    /// to safetensors first (`examples/convert.rs` of `audiox`).
    pub fn from_safetensors_bytes(
        label: impl Into<PathBuf>,
        bytes: impl Into<WeightBytes>,
    ) -> Result<Self> {
        let path = label.into();
        let bytes = bytes.into();
        let tensors = safetensors_index(&path, bytes.as_slice(), |start, end| Data::Memory {
            bytes: bytes.clone(),
            start,
            end,
        })?;
        Ok(StateDict {
            path,
            format: WeightFormat::Safetensors,
            nested_under: None,
            tensors,
        })
    }

    /// Opens a torch checkpoint, applying the official nested-dict rule (see [`StateDict::open`]).
    pub fn open_torch(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |e: pytorch_reader::PytorchError| {
            Error::weight_file(path, format!("not a readable torch checkpoint: {e}"))
        };
        let structure = PytorchReader::read_pickle_data(path, None).map_err(bad)?;
        let nested = match &structure {
            PickleValue::Dict(map) => NESTED_STATE_DICT_KEYS
                .iter()
                .find(|k| matches!(map.get(**k), Some(PickleValue::Dict(_))))
                .map(|k| k.to_string()),
            _ => {
                return Err(Error::weight_file(
                    path,
                    "the checkpoint's top level is not a dict",
                ));
            }
        };
        let reader = match &nested {
            Some(key) => PytorchReader::with_top_level_key(path, key).map_err(bad)?,
            None => PytorchReader::new(path).map_err(bad)?,
        };
        let mut tensors = BTreeMap::new();
        for (name, t) in reader.into_tensors() {
            use pytorch_reader::DType as D;
            let dtype = match t.dtype() {
                D::F64 => StoredDType::F64,
                D::F32 => StoredDType::F32,
                D::F16 => StoredDType::F16,
                D::BF16 => StoredDType::BF16,
                D::I64 => StoredDType::Other("int64"),
                D::I32 => StoredDType::Other("int32"),
                D::I16 => StoredDType::Other("int16"),
                D::I8 => StoredDType::Other("int8"),
                D::U64 => StoredDType::Other("uint64"),
                D::U32 => StoredDType::Other("uint32"),
                D::U16 => StoredDType::Other("uint16"),
                D::U8 => StoredDType::Other("uint8"),
                D::Bool => StoredDType::Other("bool"),
            };
            tensors.insert(
                name,
                StoredTensor {
                    shape: t.shape().to_vec(),
                    dtype,
                    data: Data::Torch(t),
                },
            );
        }
        Ok(StateDict {
            path: path.to_path_buf(),
            format: WeightFormat::Torch,
            nested_under: nested,
            tensors,
        })
    }

    /// A state dict made of tensors from memory (tests, synthetic weights).
    pub fn from_f32(
        path_label: impl Into<PathBuf>,
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Self> {
        let path = path_label.into();
        let mut map = BTreeMap::new();
        for (name, shape, values) in tensors {
            let n: usize = shape.iter().product();
            if n != values.len() {
                return Err(Error::weight_file(
                    &path,
                    format!("`{name}`: {} values for shape {shape:?}", values.len()),
                ));
            }
            let mut anon =
                memmap2::MmapMut::map_anon(values.len() * 4).map_err(|e| Error::io(&path, e))?;
            for (dst, v) in anon.chunks_exact_mut(4).zip(&values) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            let len = anon.len();
            let map_ro = anon.make_read_only().map_err(|e| Error::io(&path, e))?;
            map.insert(
                name,
                StoredTensor {
                    shape,
                    dtype: StoredDType::F32,
                    data: Data::Mapped {
                        map: Arc::new(map_ro),
                        start: 0,
                        end: len,
                        file_backed: false,
                    },
                },
            );
        }
        Ok(StateDict {
            path,
            format: WeightFormat::Safetensors,
            nested_under: None,
            tensors: map,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The nested key the tensors were read from (`state_dict`, ...), if any.
    pub fn nested_under(&self) -> Option<&str> {
        self.nested_under.as_deref()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// A tensor by name.
    pub fn get(&self, key: &str) -> Option<&StoredTensor> {
        self.tensors.get(key)
    }

    /// Reads a tensor as f32 values, with its shape.
    pub fn read_f32(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensors.get(key).ok_or_else(|| Error::MissingWeight {
            key: key.to_string(),
            param: key.to_string(),
            sources: vec![self.path.clone()],
        })?;
        Ok((t.shape.clone(), t.to_f32(&self.path, key)?))
    }

    /// The tensors whose names start with `prefix`, with the prefix removed.
    pub fn strip_prefix(&self, prefix: &str) -> StateDict {
        StateDict {
            path: self.path.clone(),
            format: self.format,
            nested_under: self.nested_under.clone(),
            tensors: self
                .tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
                .collect(),
        }
    }

    /// The same tensors under new names: `renamed(old)` gives the new name, `None` drops it.
    pub fn rename(
        &self,
        mut renamed: impl FnMut(&str, &StoredTensor) -> Option<String>,
    ) -> StateDict {
        StateDict {
            path: self.path.clone(),
            format: self.format,
            nested_under: self.nested_under.clone(),
            tensors: self
                .tensors
                .iter()
                .filter_map(|(k, v)| renamed(k, v).map(|n| (n, v.clone())))
                .collect(),
        }
    }
}

fn looks_like_safetensors(header: &[u8]) -> bool {
    header.len() > 8 && header[8] == b'{'
}

/// Applies the official student-checkpoint key rule.
///
/// For each stored key, in sorted order, the candidates are the key itself, then the key
/// without a leading `module.`, `model.`, `student.`, `student.model.` (each only if present);
/// the first candidate that is a model key with the same shape (or the fused `{base}weight` of a
/// model's `{base}weight_g`/`weight_v` pair, shaped like `weight_v`) receives the tensor. Stored keys
/// that match nothing are dropped (returned in the second list). When two stored keys resolve to
/// the same model key, the later one in sorted order wins, as later keys overwrite earlier ones
/// in the official loop.
pub fn resolve_official_keys(
    dict: &StateDict,
    model_keys: &BTreeMap<String, Vec<usize>>,
) -> (StateDict, Vec<String>) {
    const PREFIXES: [&str; 4] = ["module.", "model.", "student.", "student.model."];
    let mut resolved = BTreeMap::new();
    let mut dropped = Vec::new();
    for (key, tensor) in &dict.tensors {
        let candidates = std::iter::once(key.as_str())
            .chain(PREFIXES.iter().filter_map(|p| key.strip_prefix(p)));
        let mut target = None;
        for candidate in candidates {
            // A weight-normalised kernel stored fused (`{base}weight` for the model's
            // `{base}weight_g` / `{base}weight_v`, shaped like `weight_v`) is a model key too.
            let fused = || {
                model_keys.contains_key(&format!("{candidate}_g"))
                    && model_keys
                        .get(&format!("{candidate}_v"))
                        .is_some_and(|shape| shape == &tensor.shape)
            };
            if model_keys
                .get(candidate)
                .is_some_and(|shape| shape == &tensor.shape)
                || fused()
            {
                target = Some(candidate.to_string());
                break;
            }
        }
        match target {
            Some(t) => {
                resolved.insert(t, tensor.clone());
            }
            None => dropped.push(key.clone()),
        }
    }
    (
        StateDict {
            path: dict.path.clone(),
            format: dict.format,
            nested_under: dict.nested_under.clone(),
            tensors: resolved,
        },
        dropped,
    )
}
