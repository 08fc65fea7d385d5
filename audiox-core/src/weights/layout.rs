//! How our parameters correspond to the official checkpoint tensors.
//!
//! Our modules keep the official names wherever Rust allows; a [`Layout`] describes the rest,
//! once per model, in one place:
//!
//! * **Renames** (regex on our path -> official path), for PyTorch `nn.Sequential` indices and
//!   other names that are not Rust identifiers.
//! * **Transforms by module type**: a burn `Linear` stores `[in, out]` where torch stores
//!   `[out, in]` (transposed at load); burn's `LayerNorm` calls `weight`/`bias` `gamma`/`beta`;
//!   our weight-normalised convolutions hold the fused kernel where the checkpoint has
//!   `weight_g`/`weight_v`; our token convolutions hold a matmul layout of a torch `Conv1d`.
//! * **Overrides** for single parameters (the interleaved qkv rows of the DiT, permuted at load).
//! * **Ignored** official keys: stored tensors the model does not hold on purpose (documented
//!   at each use).
//!
//! The same description gives the official name and shape of every parameter without reading
//! any weight, which is what the full-size structure tests compare with the manifests.

use std::sync::Arc;

use regex::Regex;

use super::params::ParamSpec;

/// How one parameter is computed from official tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Same values, same layout.
    Identity,
    /// A torch `Linear` weight `[out, in]`, stored transposed `[in, out]`.
    TransposeLinear,
    /// Rows of a torch `Linear` weight `[out, in]` or bias `[out]`, permuted: our row `r` is
    /// official row `perm[r]`; a 2-D weight is then transposed to `[in, out]`.
    PermuteRows(Arc<Vec<usize>>),
    /// Weight normalisation `W = g * v / ||v||` (norm over every axis but the first) from the
    /// two official tensors `[g, v]`. Our parameter has the shape of `v`.
    WeightNorm,
    /// A torch `Conv1d` weight `[out, in, k]` applied along tokens, stored tap-major as
    /// `[k, in, out]` so that its `[k * in, out]` reshape is the matmul weight of the unfolded
    /// input (row `j * in + c` = tap `j`, input channel `c`).
    ConvAsMatmul,
    /// An official 0-d scalar (shape `[]`) held as a `[1]` parameter (burn has no 0-d tensors).
    Scalar,
}

/// Where one of our parameters comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Official tensor names the transform reads (one, or `[g, v]` for weight norm).
    pub keys: Vec<String>,
    /// The transform.
    pub transform: Transform,
}

impl Source {
    /// The official shapes of [`Source::keys`] for a parameter of `our` shape.
    pub fn official_shapes(&self, our: &[usize]) -> Vec<Vec<usize>> {
        match &self.transform {
            Transform::Identity => vec![our.to_vec()],
            Transform::TransposeLinear | Transform::PermuteRows(_) => {
                let mut s = our.to_vec();
                s.reverse();
                vec![s]
            }
            Transform::WeightNorm => {
                let mut g = vec![1; our.len()];
                g[0] = our[0];
                vec![g, our.to_vec()]
            }
            Transform::ConvAsMatmul => vec![vec![our[2], our[1], our[0]]],
            Transform::Scalar => vec![vec![]],
        }
    }
}

type OverrideFn = dyn Fn(&ParamSpec, &str) -> Source + Send + Sync;
type RenameFn = dyn Fn(&regex::Captures<'_>) -> String + Send + Sync;

#[derive(Clone)]
enum Replacement {
    Template(String),
    Computed(Arc<RenameFn>),
}

/// A rule set mapping our parameters to official tensors. See the docs at the top of
/// `weights/layout.rs`.
#[derive(Clone, Default)]
pub struct Layout {
    renames: Vec<(Regex, Replacement)>,
    overrides: Vec<(Regex, Arc<OverrideFn>)>,
    ignored: Vec<Regex>,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field(
                "renames",
                &self
                    .renames
                    .iter()
                    .map(|(r, _)| r.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "overrides",
                &self
                    .overrides
                    .iter()
                    .map(|(r, _)| r.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "ignored",
                &self.ignored.iter().map(Regex::as_str).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("invalid layout pattern `{pattern}`: {e}"))
}

/// Module type names (burn's `Struct:<Name>` container types) with a built-in transform.
pub mod module_types {
    /// burn `Linear`.
    pub const LINEAR: &str = "Linear";
    /// burn `LayerNorm`.
    pub const LAYER_NORM: &str = "LayerNorm";
    /// A weight-normalised convolution (any module whose type name starts with `WeightNorm`).
    pub const WEIGHT_NORM_PREFIX: &str = "WeightNorm";
    /// A convolution along tokens computed as a matmul (`TokenConv`).
    pub const TOKEN_CONV: &str = "TokenConv";
}

impl Layout {
    /// An empty layout: official names are our paths, with the built-in transforms by module type.
    pub fn new() -> Self {
        Self::default()
    }

    /// Renames our path to the official one: every match of `pattern` (a regex over our dotted
    /// path) is replaced by `replacement` (`$1` etc. allowed). Renames apply in order.
    pub fn rename(mut self, pattern: &str, replacement: &str) -> Self {
        self.renames.push((
            regex(pattern),
            Replacement::Template(replacement.to_string()),
        ));
        self
    }

    /// Like [`Layout::rename`], with the replacement computed from the match (for index
    /// arithmetic: our `blocks.2.` may be the official `layers.3.`).
    pub fn rename_with(
        mut self,
        pattern: &str,
        replacement: impl Fn(&regex::Captures<'_>) -> String + Send + Sync + 'static,
    ) -> Self {
        self.renames
            .push((regex(pattern), Replacement::Computed(Arc::new(replacement))));
        self
    }

    /// Gives the parameters whose path matches `pattern` a custom source. The closure gets the
    /// parameter and its official (renamed) path.
    pub fn with_source(
        mut self,
        pattern: &str,
        source: impl Fn(&ParamSpec, &str) -> Source + Send + Sync + 'static,
    ) -> Self {
        self.overrides.push((regex(pattern), Arc::new(source)));
        self
    }

    /// Declares the parameters whose path matches `pattern` as official 0-d scalars held as
    /// `[1]` ([`Transform::Scalar`]).
    pub fn scalar(self, pattern: &str) -> Self {
        self.with_source(pattern, |_, official| Source {
            keys: vec![official.to_string()],
            transform: Transform::Scalar,
        })
    }

    /// Declares official tensors (regex over official names) that the model deliberately does
    /// not hold. They are listed as ignored in load reports and count as present in structure
    /// comparisons.
    pub fn ignore(mut self, pattern: &str) -> Self {
        self.ignored.push(regex(pattern));
        self
    }

    /// Whether an official tensor name is declared ignored.
    pub fn is_ignored(&self, official: &str) -> bool {
        self.ignored.iter().any(|r| r.is_match(official))
    }

    /// The official path for one of our paths (renames applied).
    pub fn official_path(&self, ours: &str) -> String {
        let mut path = ours.to_string();
        for (pattern, replacement) in &self.renames {
            path = match replacement {
                Replacement::Template(t) => pattern.replace_all(&path, t.as_str()).into_owned(),
                Replacement::Computed(f) => pattern
                    .replace_all(&path, |c: &regex::Captures<'_>| f(c))
                    .into_owned(),
            };
        }
        path
    }

    /// Where a parameter comes from. The transform follows from the owning module's type and
    /// the parameter's own name; the official keys are then renamed by the layout's renames.
    pub fn source(&self, param: &ParamSpec) -> Source {
        if let Some((_, f)) = self.overrides.iter().find(|(r, _)| r.is_match(&param.path)) {
            return f(param, &self.official_path(&param.path));
        }
        let path = param.path.as_str();
        let (base, leaf) = match path.rsplit_once('.') {
            Some((b, l)) => (format!("{b}."), l),
            None => (String::new(), path),
        };
        let module = param.module.as_str();
        let (keys, transform) = match (module, leaf) {
            (module_types::LINEAR, "weight") => {
                (vec![path.to_string()], Transform::TransposeLinear)
            }
            (module_types::LAYER_NORM, "gamma") => {
                (vec![format!("{base}weight")], Transform::Identity)
            }
            (module_types::LAYER_NORM, "beta") => {
                (vec![format!("{base}bias")], Transform::Identity)
            }
            (m, "weight") if m.starts_with(module_types::WEIGHT_NORM_PREFIX) => (
                vec![format!("{base}weight_g"), format!("{base}weight_v")],
                Transform::WeightNorm,
            ),
            (module_types::TOKEN_CONV, "weight") => {
                (vec![path.to_string()], Transform::ConvAsMatmul)
            }
            _ => (vec![path.to_string()], Transform::Identity),
        };
        Source {
            keys: keys.iter().map(|k| self.official_path(k)).collect(),
            transform,
        }
    }

    /// Official names and shapes of a parameter, as a checkpoint stores them.
    pub fn official_tensors(&self, param: &ParamSpec) -> Vec<(String, Vec<usize>)> {
        let source = self.source(param);
        let shapes = source.official_shapes(&param.shape);
        source.keys.into_iter().zip(shapes).collect()
    }
}
