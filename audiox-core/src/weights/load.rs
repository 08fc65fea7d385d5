//! Applying checkpoint tensors to a module.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

use super::layout::{Layout, Source, Transform};
use super::params::param_specs;
use super::state_dict::StateDict;
use crate::error::{Error, Result};
use crate::precision::{
    WeightPrecision, held_as, hold, hold_matmul_weight, hold_matmul_weight_transposed,
    is_matmul_weight,
};

/// The loading contract every model component follows: built from its own config type, its
/// weights read from `sources` in the component's official names (each source looked up under
/// its prefix; later sources override earlier ones per parameter, see [`load_module`]).
///
/// ```ignore
/// let (dit, report) = Dit::load(&dit_config, &[WeightSource::with_prefix(&ckpt, "model.model.")], &device)?;
/// ```
///
/// Every required weight must be found with its official shape; the [`LoadReport`] says where
/// each came from and what was left unused.
pub trait Component: Sized {
    /// The component's sizes and settings.
    type Config;

    /// Builds the component for `config` on `device` and loads its weights from `sources`.
    fn load(
        config: &Self::Config,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)>;
}

/// A weight file seen through a key prefix: the module's official names are looked up as
/// `prefix + name`.
#[derive(Debug, Clone, Copy)]
pub struct WeightSource<'a> {
    /// The file.
    pub dict: &'a StateDict,
    /// Prepended to every official name (`"model.model."`, or `""`).
    pub prefix: &'a str,
    /// How the matmul weights read from this source are held (default f32; see
    /// [`WeightSource::with_precision`]).
    pub precision: WeightPrecision,
}

impl<'a> WeightSource<'a> {
    /// The whole file, no prefix.
    pub fn new(dict: &'a StateDict) -> Self {
        Self::with_prefix(dict, "")
    }

    /// The tensors under `prefix`.
    pub fn with_prefix(dict: &'a StateDict, prefix: &'a str) -> Self {
        WeightSource {
            dict,
            prefix,
            precision: WeightPrecision::F32,
        }
    }

    /// The same source with its matmul weights (the `weight` of every module listed in
    /// [`crate::precision::MATMUL_WEIGHT_MODULES`]) held in `precision`, and its convolution
    /// kernels ([`crate::precision::CONV_KERNEL_MODULES`]) in bf16 when `precision` is reduced
    /// ([`crate::precision::held_as`]). Each one is converted as it is read: loading never holds
    /// more than the converted model plus one tensor in f32.
    pub fn with_precision(mut self, precision: WeightPrecision) -> Self {
        self.precision = precision;
        self
    }
}

/// One parameter that received a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedWeight {
    /// Our parameter path.
    pub param: String,
    /// The stored tensor names it was computed from.
    pub keys: Vec<String>,
    /// The file they came from.
    pub file: PathBuf,
}

/// What a load did. Missing required weights and shape mismatches are errors, so a report only
/// exists for a load that succeeded.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Parameters that received a value, with their source tensors.
    pub applied: Vec<AppliedWeight>,
    /// Parameters no file provided, left at their initial value. Only parameters a layout
    /// marks optional can end up here.
    pub missing: Vec<String>,
    /// Stored tensors (under the loaded prefix) that no parameter used and that are not
    /// declared ignored: `(file, full key)`.
    pub unused: Vec<(PathBuf, String)>,
    /// Stored tensors a parameter could have used but that a later source replaced (the
    /// official loading order: e.g. the student file's CLIP copy over the CLIP folder's).
    pub overridden: Vec<(PathBuf, String)>,
    /// Stored tensors the model deliberately does not hold (declared in its layout).
    pub ignored: Vec<(PathBuf, String)>,
    /// Stored tensors the official key rule dropped before loading (junk keys, other models).
    pub dropped: Vec<(PathBuf, String)>,
}

impl LoadReport {
    /// Adds another report's entries to this one.
    pub fn merge(&mut self, other: LoadReport) {
        self.applied.extend(other.applied);
        self.missing.extend(other.missing);
        self.unused.extend(other.unused);
        self.overridden.extend(other.overridden);
        self.ignored.extend(other.ignored);
        self.dropped.extend(other.dropped);
    }

    /// A one-paragraph summary for logs.
    pub fn summary(&self) -> String {
        format!(
            "{} parameters loaded, {} missing, {} unused, {} overridden, {} ignored, {} dropped",
            self.applied.len(),
            self.missing.len(),
            self.unused.len(),
            self.overridden.len(),
            self.ignored.len(),
            self.dropped.len()
        )
    }
}

/// Where one parameter's tensors were found.
struct Found<'a> {
    source: Source,
    dict: &'a StateDict,
    keys: Vec<String>,
    /// How the parameter is held once computed.
    precision: WeightPrecision,
    /// Whether it is a matmul weight (laid out for this CPU's products, [`hold_matmul_weight`]).
    matmul: bool,
}

/// Loads `module`'s parameters from `sources` (later sources override earlier ones, per
/// parameter) following `layout`. Every parameter must be found and have its official shape.
pub fn load_module<M: Module>(
    module: M,
    layout: &Layout,
    sources: &[WeightSource<'_>],
) -> Result<(M, LoadReport)> {
    let specs = param_specs(&module);
    let mut plan: HashMap<String, Found<'_>> = HashMap::with_capacity(specs.len());
    let mut consumed: BTreeSet<(PathBuf, String)> = BTreeSet::new();
    let mut shadowed: BTreeSet<(PathBuf, String)> = BTreeSet::new();
    for spec in &specs {
        let official = layout.source(spec);
        // Every source that has the tensors; the last one wins, the others are overridden.
        // A weight-normalised kernel may also be stored fused (`{base}weight`, as the
        // `convert` example writes it), then it is read as it is.
        let mut candidates = sources.iter().filter_map(|s| {
            let keys: Vec<String> = official
                .keys
                .iter()
                .map(|k| format!("{}{k}", s.prefix))
                .collect();
            if keys.iter().all(|k| s.dict.get(k).is_some()) {
                return Some((s.dict, keys, official.clone(), s.precision));
            }
            let fused = fused_weight_norm_key(&official)?;
            let key = format!("{}{fused}", s.prefix);
            s.dict.get(&key).is_some().then(|| {
                let source = Source {
                    keys: vec![fused],
                    transform: Transform::Identity,
                };
                (s.dict, vec![key], source, s.precision)
            })
        });
        let mut found = candidates.next();
        for later in candidates {
            if let Some((dict, keys, _, _)) = found.replace(later) {
                shadowed.extend(keys.into_iter().map(|k| (dict.path().to_path_buf(), k)));
            }
        }
        let Some((dict, keys, source, precision)) = found else {
            let missing_key = official.keys.first().cloned().unwrap_or_default();
            return Err(Error::MissingWeight {
                key: missing_key,
                param: spec.path.clone(),
                sources: sources
                    .iter()
                    .map(|s| s.dict.path().to_path_buf())
                    .collect(),
            });
        };
        // Shapes are checked before anything is read.
        let expected = source.official_shapes(&spec.shape);
        for (key, want) in keys.iter().zip(&expected) {
            let stored = dict.get(key).expect("presence checked above");
            if stored.shape() != want.as_slice() {
                return Err(Error::ShapeMismatch {
                    path: dict.path().to_path_buf(),
                    key: key.clone(),
                    expected: want.clone(),
                    found: stored.shape().to_vec(),
                });
            }
        }
        for k in &keys {
            consumed.insert((dict.path().to_path_buf(), k.clone()));
        }
        // Only matmul weights (in `precision`) and convolution kernels (in bf16) are held in
        // a reduced precision.
        let precision = held_as(&spec.module, &spec.path, spec.shape.len(), precision);
        let matmul = is_matmul_weight(&spec.module, &spec.path, spec.shape.len());
        plan.insert(
            spec.path.clone(),
            Found {
                source,
                dict,
                keys,
                precision,
                matmul,
            },
        );
    }

    let mut applier = Applier {
        plan,
        path: Vec::new(),
        applied: Vec::new(),
        error: None,
        unreleased_bytes: 0,
    };
    let module = module.map(&mut applier);
    if applier.unreleased_bytes > 0 {
        crate::memory::release_freed();
    }
    if let Some(e) = applier.error {
        return Err(e);
    }

    let mut report = LoadReport {
        applied: applier.applied,
        ..Default::default()
    };
    let mut seen_files = BTreeSet::new();
    for s in sources {
        if !seen_files.insert((s.dict.path().to_path_buf(), s.prefix)) {
            continue;
        }
        for key in s.dict.keys() {
            let Some(name) = key.strip_prefix(s.prefix) else {
                continue;
            };
            let entry = (s.dict.path().to_path_buf(), key.to_string());
            if consumed.contains(&entry) {
                continue;
            }
            if shadowed.contains(&entry) {
                report.overridden.push(entry);
            } else if layout.is_ignored(name) {
                report.ignored.push(entry);
            } else {
                report.unused.push(entry);
            }
        }
    }
    Ok((module, report))
}

/// The fused name (`{base}weight`) of a weight-normalised parameter's `[{base}weight_g,
/// {base}weight_v]` pair; `None` for other transforms.
pub fn fused_weight_norm_key(source: &Source) -> Option<String> {
    match (&source.transform, source.keys.as_slice()) {
        (Transform::WeightNorm, [g, _]) => g.strip_suffix("_g").map(str::to_string),
        _ => None,
    }
}

/// Weight normalisation `W = g * v / ||v||` (norm over every axis but the first) of `v`
/// (`rows` rows) and `g` (one value per row): what the loader computes for a
/// [`Transform::WeightNorm`] parameter, and what the `convert` example stores.
pub fn fuse_weight_norm(g: &[f32], v: &[f32], rows: usize) -> Vec<f32> {
    let cols = v.len() / rows.max(1);
    let mut w = Vec::with_capacity(v.len());
    for (r, row) in v.chunks_exact(cols.max(1)).enumerate() {
        let norm = row
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        let scale = g[r] as f64 / norm;
        w.extend(row.iter().map(|&x| (x as f64 * scale) as f32));
    }
    w
}

/// Official names and shapes of every parameter of `module` (plus nothing else): what a
/// checkpoint for it must hold. Nothing is materialised.
pub fn official_names<M: Module>(module: &M, layout: &Layout) -> BTreeMap<String, Vec<usize>> {
    param_specs(module)
        .iter()
        .flat_map(|spec| layout.official_tensors(spec))
        .collect()
}

struct Applier<'a> {
    plan: HashMap<String, Found<'a>>,
    path: Vec<String>,
    applied: Vec<AppliedWeight>,
    error: Option<Error>,
    /// Bytes of f32 reading buffers freed since memory was last handed back
    /// ([`crate::memory::release_freed`]).
    unreleased_bytes: usize,
}

impl ModuleMapper for Applier<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let path = self.path.join(".");
        let Some(found) = self.plan.remove(&path) else {
            return param;
        };
        let shape = param.lazy_shape().to_vec();
        // A linear weight stored as torch's `[out, in]` is handed over in that layout where
        // the precision holds it transposed anyway (no transposition there and back).
        let keep_official = found.matmul && found.precision != WeightPrecision::F32;
        match compute(&found, &shape, keep_official) {
            Ok(computed) => {
                let device = param.lazy_device();
                // The f32 reading buffer of this one parameter, converted here and dropped
                // before the next is read.
                self.unreleased_bytes += shape.iter().product::<usize>() * size_of::<f32>();
                let values = match computed {
                    Computed::Ours(values) => values,
                    Computed::Transposed(values) => match hold_matmul_weight_transposed::<D>(
                        values,
                        &shape,
                        found.precision,
                        &device,
                    ) {
                        Ok(tensor) => return self.applied(param, path, &found, tensor),
                        Err(values) => transpose2(&values, shape[1], shape[0]),
                    },
                };
                let tensor = if found.matmul {
                    hold_matmul_weight::<D>(values, shape, found.precision, &device)
                } else {
                    hold::<D>(values, shape, found.precision, &device)
                };
                self.applied(param, path, &found, tensor)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

impl Applier<'_> {
    /// `param` set to its loaded `tensor`, recorded in the report; the freed reading buffers
    /// handed back to the system every [`crate::memory::RELEASE_EVERY_BYTES`] (they would
    /// otherwise stay resident, see [`crate::memory`]).
    fn applied<const D: usize>(
        &mut self,
        param: Param<Tensor<D>>,
        path: String,
        found: &Found<'_>,
        tensor: Tensor<D>,
    ) -> Param<Tensor<D>> {
        if self.unreleased_bytes >= crate::memory::RELEASE_EVERY_BYTES {
            crate::memory::release_freed();
            self.unreleased_bytes = 0;
        }
        self.applied.push(AppliedWeight {
            param: path,
            keys: found.keys.clone(),
            file: found.dict.path().to_path_buf(),
        });
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// One parameter's values as computed: in our layout, or (a 2-D linear weight asked for in
/// its official layout) transposed, `[ours[1], ours[0]]` row-major.
enum Computed {
    Ours(Vec<f32>),
    Transposed(Vec<f32>),
}

/// Reads the official tensors of one parameter and transforms them to our layout.
/// With `keep_official`, a 2-D linear weight (`TransposeLinear`, `PermuteRows`) comes back in
/// torch's `[out, in]` layout ([`Computed::Transposed`]) instead of being transposed here.
fn compute(found: &Found<'_>, ours: &[usize], keep_official: bool) -> Result<Computed> {
    let mut read = Vec::with_capacity(found.keys.len());
    for key in &found.keys {
        let (shape, values) = found.dict.read_f32(key)?;
        read.push((shape, values));
    }
    Ok(Computed::Ours(match &found.source.transform {
        Transform::Identity | Transform::Scalar => read.remove(0).1,
        Transform::TransposeLinear => {
            let (shape, v) = read.remove(0);
            if keep_official && shape.len() == 2 {
                return Ok(Computed::Transposed(v));
            }
            transpose2(&v, shape[0], shape[1])
        }
        Transform::PermuteRows(perm) => {
            let (shape, v) = read.remove(0);
            let rows = shape[0];
            let cols: usize = shape[1..].iter().product();
            let mut permuted = Vec::with_capacity(v.len());
            for &r in perm.iter() {
                permuted.extend_from_slice(&v[r * cols..(r + 1) * cols]);
            }
            debug_assert_eq!(perm.len(), rows);
            if shape.len() == 2 && keep_official {
                return Ok(Computed::Transposed(permuted));
            } else if shape.len() == 2 {
                transpose2(&permuted, rows, cols)
            } else {
                permuted
            }
        }
        Transform::WeightNorm => {
            let (_, v) = read.remove(1);
            let (_, g) = read.remove(0);
            fuse_weight_norm(&g, &v, ours[0])
        }
        Transform::ConvAsMatmul => {
            // official [out, in, k] -> ours [k, in, out]
            let (shape, v) = read.remove(0);
            let (out, inp, k) = (shape[0], shape[1], shape[2]);
            conv_as_matmul(v, out, inp, k)
        }
    }))
}

/// An official convolution kernel `v` `[out, inp, k]` as our matmul weight `[k, inp, out]`:
/// `[out, inp * k]` transposed (row `c * k + j` holds tap `j` of input `c` for every output
/// channel), then the rows reordered to `j * inp + c` (whole rows copied). Two cache-friendly
/// passes on all cores instead of one write `out` floats apart per element; at most two copies
/// of the tensor at a time.
fn conv_as_matmul(v: Vec<f32>, out: usize, inp: usize, k: usize) -> Vec<f32> {
    let t = transpose2(&v, out, inp * k);
    drop(v);
    let mut w = vec![0.0f32; t.len()];
    if out > 0 {
        w.par_chunks_mut(out).enumerate().for_each(|(row, dst)| {
            let (j, c) = (row / inp, row % inp);
            dst.copy_from_slice(&t[(c * k + j) * out..][..out]);
        });
    }
    w
}

/// `v` (`[rows, cols]`, row-major) transposed to `[cols, rows]`, blocked on all cores
/// (`audiox_kernels::transpose`; the element-by-element loop it replaced took a few seconds of
/// a full-size load).
fn transpose2(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    audiox_kernels::transpose(v, rows, cols)
}

/// Shapes that differ between the official names of `module` (through `layout`) and a
/// manifest (`name -> shape`), for structure tests: `(missing from the module, not in the
/// manifest, shape differences)`. Names the layout declares ignored count as present.
pub fn compare_with_manifest<M: Module>(
    module: &M,
    layout: &Layout,
    manifest: &BTreeMap<String, Vec<usize>>,
) -> StructureDiff {
    let ours = official_names(module, layout);
    let mut diff = StructureDiff::default();
    for (name, shape) in manifest {
        match ours.get(name) {
            Some(s) if s == shape => {}
            Some(s) => diff
                .shape_mismatch
                .push((name.clone(), shape.clone(), s.clone())),
            None if layout.is_ignored(name) => {}
            None => diff.missing.push(name.clone()),
        }
    }
    for name in ours.keys() {
        if !manifest.contains_key(name) {
            diff.extra.push(name.clone());
        }
    }
    diff
}

/// Result of [`compare_with_manifest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructureDiff {
    /// Manifest names the module does not hold (and does not declare ignored).
    pub missing: Vec<String>,
    /// Names the module holds that the manifest does not list.
    pub extra: Vec<String>,
    /// `(name, manifest shape, our official shape)`.
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl StructureDiff {
    /// Whether the module matches the manifest exactly.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.shape_mismatch.is_empty()
    }
}

impl std::fmt::Display for StructureDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &[String]| v.iter().take(12).cloned().collect::<Vec<_>>().join(", ");
        writeln!(f, "{} missing: {}", self.missing.len(), show(&self.missing))?;
        writeln!(f, "{} extra: {}", self.extra.len(), show(&self.extra))?;
        for (n, want, got) in self.shape_mismatch.iter().take(12) {
            writeln!(f, "shape of {n}: manifest {want:?}, ours {got:?}")?;
        }
        Ok(())
    }
}

/// Reads a manifest file (`{"name": [[shape...], "dtype"], ...}`) into `name -> shape`.
pub fn read_manifest(path: impl AsRef<std::path::Path>) -> Result<BTreeMap<String, Vec<usize>>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let raw: BTreeMap<String, (Vec<usize>, String)> =
        serde_json::from_str(&text).map_err(|e| Error::Fixture {
            path: path.to_path_buf(),
            message: format!("not a manifest: {e}"),
        })?;
    Ok(raw.into_iter().map(|(k, (shape, _))| (k, shape)).collect())
}

#[cfg(test)]
mod tests {
    use super::{conv_as_matmul, transpose2};

    /// The official `[out, in, k]` kernel lands in our `[k, in, out]` layout element by
    /// element, as the definition says.
    #[test]
    fn conv_kernels_become_matmul_weights() {
        for (out, inp, k) in [(1, 1, 1), (5, 3, 3), (33, 40, 3), (64, 7, 1), (0, 3, 3)] {
            let v: Vec<f32> = (0..out * inp * k).map(|i| i as f32).collect();
            let w = conv_as_matmul(v.clone(), out, inp, k);
            assert_eq!(w.len(), v.len());
            for o in 0..out {
                for c in 0..inp {
                    for j in 0..k {
                        assert_eq!(w[(j * inp + c) * out + o], v[(o * inp + c) * k + j]);
                    }
                }
            }
        }
    }

    /// Every element lands at its transposed place, for sizes off the 32-column blocks and
    /// empty ones.
    #[test]
    fn transpose2_moves_every_element() {
        for (rows, cols) in [
            (1, 1),
            (3, 5),
            (32, 32),
            (33, 70),
            (100, 31),
            (0, 4),
            (4, 0),
        ] {
            let v: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose2(&v, rows, cols);
            assert_eq!(t.len(), v.len());
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        v[r * cols + c],
                        "[{rows}, {cols}] at ({r}, {c})"
                    );
                }
            }
        }
    }
}
