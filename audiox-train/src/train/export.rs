//! Writing trained modules under their official tensor names: the inverse of what the loader
//! (`audiox_core::weights::load_module`) does with a [`Layout`].
//!
//! Each parameter's [`Source`](audiox_core::weights::Source) says which official tensor(s) the loader reads and how it turns
//! them into our layout ([`Transform`]); [`official_tensors_of`] applies the inverse, so that
//! loading the written tensors with the same layout gives back every parameter bit for bit.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;

use audiox_core::weights::{Layout, Transform, param_specs};

use super::checkpoint::write_atomic;
use super::error::{TrainError, TrainResult};
use super::vae::{NamedTensor, parameters};

/// `[rows, cols]` row-major -> `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Every float parameter of `module` under its official name (`prefix` + the layout's name),
/// in the official shape and element order.
pub fn official_tensors_of<M: Module>(
    module: &M,
    layout: &Layout,
    prefix: &str,
) -> TrainResult<Vec<NamedTensor>> {
    let specs = param_specs(module);
    let values = parameters(module);
    specs
        .iter()
        .zip(values)
        .map(|(spec, (_, shape, v))| {
            let source = layout.source(spec);
            let name = |k: &String| format!("{prefix}{k}");
            let bad = |what: &str| {
                TrainError::config(
                    "export",
                    format!(
                        "`{}` ({:?}, shape {shape:?}): {what}",
                        spec.path, source.transform
                    ),
                )
            };
            let key = source.keys.first().ok_or_else(|| bad("no official key"))?;
            Ok(match &source.transform {
                Transform::Identity => (name(key), shape, v),
                Transform::Scalar => (name(key), Vec::new(), v),
                Transform::TransposeLinear => {
                    let [i, o] = shape[..] else {
                        return Err(bad("not 2-D"));
                    };
                    (name(key), vec![o, i], transpose(&v, i, o))
                }
                Transform::PermuteRows(perm) => {
                    // The loader: ours[r] = official[perm[r]] (rows), then a 2-D weight is
                    // transposed to [in, out].
                    let (rows_major, official_shape) = match shape[..] {
                        [i, o] => (transpose(&v, i, o), vec![o, i]),
                        [n] => (v, vec![n]),
                        _ => return Err(bad("neither 1-D nor 2-D")),
                    };
                    let rows = official_shape[0];
                    if perm.len() != rows {
                        return Err(bad("permutation length differs from the rows"));
                    }
                    let cols = rows_major.len() / rows.max(1);
                    let mut official = vec![0.0; rows_major.len()];
                    for (r, &p) in perm.iter().enumerate() {
                        official[p * cols..(p + 1) * cols]
                            .copy_from_slice(&rows_major[r * cols..(r + 1) * cols]);
                    }
                    (name(key), official_shape, official)
                }
                Transform::ConvAsMatmul => {
                    // ours [k, in, out] -> official [out, in, k].
                    let [k, inp, out] = shape[..] else {
                        return Err(bad("not 3-D"));
                    };
                    let mut w = vec![0.0; v.len()];
                    for o in 0..out {
                        for c in 0..inp {
                            for j in 0..k {
                                w[(o * inp + c) * k + j] = v[(j * inp + c) * out + o];
                            }
                        }
                    }
                    (name(key), vec![out, inp, k], w)
                }
                Transform::WeightNorm => {
                    // Stored fused under `...weight`, as `audiox convert` writes it.
                    let fused = key
                        .strip_suffix("_g")
                        .ok_or_else(|| bad("weight-norm key without `_g`"))?;
                    (name(&fused.to_string()), shape, v)
                }
            })
        })
        .collect()
}

/// Writes `tensors` as an f32 safetensors file (atomically), with `metadata`; the header's keys
/// are sorted, so the same tensors and metadata always give the same bytes.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: &[(&str, &str)],
) -> TrainResult<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| TrainError::checkpoint(path, format!("`{name}`: {e}")))
        })
        .collect::<TrainResult<Vec<_>>>()?;
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let data = safetensors::serialize(views, Some(metadata))
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    // Sorted header keys: the same tensors give the same bytes on every export.
    write_atomic(path, &audiox::convert::with_sorted_header(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tensors_give_the_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let tensors: Vec<NamedTensor> = (0..12)
            .map(|i| (format!("layer{i}.weight"), vec![2, 3], vec![i as f32; 6]))
            .collect();
        let metadata: Vec<(String, String)> = (0..12)
            .map(|i| (format!("key{i}"), format!("value{i}")))
            .collect();
        let metadata: Vec<(&str, &str)> = metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut files = Vec::new();
        for n in 0..8 {
            let path = tmp.path().join(format!("{n}.safetensors"));
            write_safetensors(&path, &tensors, &metadata).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.iter().all(|f| f == &files[0]), "bytes differ");
        let read = safetensors::SafeTensors::deserialize(&files[0]).unwrap();
        assert_eq!(read.len(), tensors.len());
        let t = read.tensor("layer5.weight").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(&t.data()[..4], &5.0f32.to_le_bytes());
        let (_, meta) = safetensors::SafeTensors::read_metadata(&files[0]).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .unwrap()
                .get("key7")
                .map(String::as_str),
            Some("value7")
        );
    }
}
