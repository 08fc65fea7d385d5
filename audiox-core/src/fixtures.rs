//! Reading the golden fixture sets (test support, behind the `fixtures` feature).
//!
//! A fixture set is a folder with an `index.json` listing its fixtures; each tensor fixture is
//! `<name>.safetensors` (weights under their official names, `in.*` inputs, `rng.*` recorded
//! random draws, `mid.*` intermediates, `out.*` outputs) plus `<name>.json` (config, sizes,
//! tolerances). Tests and tools read the set in `AUDIOX_FIXTURES_DIR` when it is set, else the
//! copy vendored in this repository (`fixtures/tiny`). Every size must come from the fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::weights::StateDict;

/// Environment variable naming the fixture set to test against.
pub const FIXTURES_ENV: &str = "AUDIOX_FIXTURES_DIR";

/// The repository root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("audiox-core lives inside the workspace")
        .to_path_buf()
}

/// The fixture set folder: `$AUDIOX_FIXTURES_DIR`, or the vendored `fixtures/tiny`.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os(FIXTURES_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("fixtures").join("tiny"),
    }
}

/// The full-size parameter manifests (always the vendored copy).
pub fn manifest_dir() -> PathBuf {
    repo_root().join("fixtures").join("manifest")
}

/// The official full-size inference config file (built into `audiox-core` as
/// [`OFFICIAL_INFER_CONFIG`](crate::config::OFFICIAL_INFER_CONFIG)).
pub fn official_config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("audiox_turbo_infer_4step.json")
}

/// One section of the official full-size inference config as a component's config type, by
/// dotted path (see [`crate::config::section`]).
pub fn official_config_section<T: serde::de::DeserializeOwned>(path: &str) -> Result<T> {
    crate::config::section(&official_config_json()?, path)
}

/// The official full-size inference config as JSON.
pub fn official_config_json() -> Result<Value> {
    serde_json::from_str(crate::config::OFFICIAL_INFER_CONFIG)
        .map_err(|e| Error::config("", format!("not JSON: {e}")))
}

/// One section of the model config file at `path` (a bundle's `config.json`) as a component's
/// config type, by dotted path (see [`crate::config::section`]).
pub fn config_file_section<T: serde::de::DeserializeOwned>(
    path: &Path,
    section: &str,
) -> Result<T> {
    crate::config::section(&read_json(path)?, section).map_err(|e| match e {
        Error::Config {
            path: None,
            field,
            message,
        } => Error::Config {
            path: Some(path.to_path_buf()),
            field,
            message,
        },
        other => other,
    })
}

/// A fixture set: its folder and `index.json`.
#[derive(Debug, Clone)]
pub struct FixtureSet {
    dir: PathBuf,
    index: Value,
}

impl FixtureSet {
    /// Opens the set in [`fixtures_dir`].
    pub fn open_default() -> Result<Self> {
        Self::open(fixtures_dir())
    }

    /// Opens the set in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let path = dir.join("index.json");
        let index = read_json(&path)?;
        if !index.get("fixtures").is_some_and(Value::is_object) {
            return Err(Error::Fixture {
                path,
                message: "no `fixtures` object".into(),
            });
        }
        Ok(FixtureSet { dir, index })
    }

    /// The set's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of the fixtures the index lists, in index order.
    pub fn names(&self) -> Vec<String> {
        self.index["fixtures"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the index lists `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index["fixtures"].get(name).is_some()
    }

    /// The index entry of `name`.
    pub fn entry(&self, name: &str) -> Option<&Value> {
        self.index["fixtures"].get(name)
    }

    /// Opens a tensor fixture (`<name>.json` + `<name>.safetensors`).
    pub fn fixture(&self, name: &str) -> Result<Fixture> {
        Fixture::open(&self.dir, name)
    }

    /// The bundle folder (a complete small model in the official layout).
    pub fn bundle_dir(&self) -> PathBuf {
        self.dir.join("bundle")
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Fixture {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

/// One tensor fixture.
#[derive(Debug, Clone)]
pub struct Fixture {
    name: String,
    json_path: PathBuf,
    meta: Value,
    tensors: StateDict,
    raw: std::sync::Arc<Vec<u8>>,
}

/// A tensor read from a fixture.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureTensor<T> {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<T>,
}

impl Fixture {
    /// Opens `<dir>/<name>.json` and its safetensors file.
    pub fn open(dir: &Path, name: &str) -> Result<Self> {
        let json_path = dir.join(format!("{name}.json"));
        let meta = read_json(&json_path)?;
        let file = meta
            .get("file")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{name}.safetensors"));
        let st_path = dir.join(file);
        let tensors = StateDict::open_safetensors(&st_path)?;
        let raw = std::fs::read(&st_path).map_err(|e| Error::io(&st_path, e))?;
        Ok(Fixture {
            name: name.to_string(),
            json_path,
            meta,
            tensors,
            raw: std::sync::Arc::new(raw),
        })
    }

    /// The fixture's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON description.
    pub fn meta(&self) -> &Value {
        &self.meta
    }

    /// The safetensors file as a state dict (weights under their official names, plus the
    /// `in.*`/`rng.*`/`mid.*`/`out.*` tensors).
    pub fn weights(&self) -> &StateDict {
        &self.tensors
    }

    /// The model config the fixture was built from (official schema), as JSON.
    pub fn config_json(&self) -> Result<&Value> {
        self.meta
            .get("config")
            .ok_or_else(|| self.err("no `config`"))
    }

    /// One section of [`Fixture::config_json`] as a component's config type, by dotted path
    /// (`"model.pretransform.config"`; see [`crate::config::section`]).
    pub fn config_section<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        crate::config::section(self.config_json()?, path)
    }

    /// An entry of the JSON `sizes` object, by dotted path (`"mmdit.depth"`).
    pub fn size(&self, dotted: &str) -> Result<usize> {
        let mut v = self
            .meta
            .get("sizes")
            .ok_or_else(|| self.err("no `sizes`"))?;
        for part in dotted.split('.') {
            v = v
                .get(part)
                .ok_or_else(|| self.err(format!("no `sizes.{dotted}`")))?;
        }
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| self.err(format!("`sizes.{dotted}` is not an unsigned integer")))
    }

    /// A top-level JSON field.
    pub fn field(&self, name: &str) -> Result<&Value> {
        self.meta
            .get(name)
            .ok_or_else(|| self.err(format!("no `{name}`")))
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Fixture {
            path: self.json_path.clone(),
            message: message.into(),
        }
    }

    /// Whether the fixture holds a tensor named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.get(name).is_some()
    }

    /// Names of the stored tensors starting with `prefix` (`"mid."`, `"out."`).
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// A float tensor (any float dtype, returned as f32).
    pub fn f32(&self, name: &str) -> Result<FixtureTensor<f32>> {
        let (shape, values) = self
            .tensors
            .read_f32(name)
            .map_err(|e| self.err(format!("`{name}`: {e}")))?;
        Ok(FixtureTensor { shape, values })
    }

    /// An integer or boolean tensor (int64, int32, uint8, bool), as i64.
    pub fn i64(&self, name: &str) -> Result<FixtureTensor<i64>> {
        let st = safetensors::SafeTensors::deserialize(&self.raw)
            .map_err(|e| self.err(e.to_string()))?;
        let view = st
            .tensor(name)
            .map_err(|e| self.err(format!("`{name}`: {e}")))?;
        use safetensors::Dtype;
        let data = view.data();
        let values: Vec<i64> = match view.dtype() {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
            Dtype::U8 | Dtype::BOOL => data.iter().map(|&b| b as i64).collect(),
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
            other => return Err(self.err(format!("`{name}`: {other:?} is not an integer dtype"))),
        };
        Ok(FixtureTensor {
            shape: view.shape().to_vec(),
            values,
        })
    }

    /// The suggested tolerance `(atol, rtol)` of an `out.*` or `mid.*` tensor.
    pub fn tolerance(&self, name: &str) -> Result<(f64, f64)> {
        let t = self
            .meta
            .get("tolerances")
            .and_then(|t| t.get(name))
            .and_then(|t| t.get("suggested"))
            .ok_or_else(|| self.err(format!("no suggested tolerance for `{name}`")))?;
        let atol = t
            .get("atol")
            .and_then(Value::as_f64)
            .ok_or_else(|| self.err(format!("`{name}`: no atol")))?;
        let rtol = t.get("rtol").and_then(Value::as_f64).unwrap_or(0.0);
        Ok((atol, rtol))
    }

    /// Compares `got` with the stored float tensor `name` using its suggested tolerance.
    pub fn check(&self, name: &str, got_shape: &[usize], got: &[f32]) -> Result<Check> {
        let (atol, rtol) = self.tolerance(name)?;
        self.check_with(name, got_shape, got, atol, rtol)
    }

    /// Compares `got` with the stored float tensor `name` using the given tolerance.
    pub fn check_with(
        &self,
        name: &str,
        got_shape: &[usize],
        got: &[f32],
        atol: f64,
        rtol: f64,
    ) -> Result<Check> {
        let want = self.f32(name)?;
        Ok(Check::compare(
            name,
            &want.shape,
            &want.values,
            got_shape,
            got,
            atol,
            rtol,
        ))
    }
}

/// The largest error a half-precision run may show under [`Criterion::Half`], as a fraction of
/// the reference tensor's peak `|value|`.
pub const HALF_PEAK_FRACTION: f64 = 0.05;

/// How a [`Check`]'s error decides pass or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Criterion {
    /// The fixture's tolerance, `|got - ref| <= atol + rtol * |ref|` everywhere: the rule for
    /// f32 computation (the default).
    #[default]
    Tolerance,
    /// The rule for a half-precision (f16, bf16) computation, whose rounding alone exceeds the
    /// f32 tolerances: every value finite, and the largest absolute error at most
    /// [`HALF_PEAK_FRACTION`] of the reference's peak `|value|`. Exact checks (`atol` and
    /// `rtol` both 0: integers, masks) and shape errors keep their own outcome.
    Half,
}

/// The outcome of comparing one tensor: `|got - ref| <= atol + rtol * |ref|` everywhere (or,
/// once [`Check::judged`] under [`Criterion::Half`], the half-precision rule).
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The fixture tensor compared.
    pub name: String,
    /// Whether every element is within tolerance (and the shapes agree).
    pub pass: bool,
    /// Largest absolute error.
    pub max_abs_err: f64,
    /// Largest excess over the tolerance (`err - (atol + rtol |ref|)`), negative when passing.
    pub worst_excess: f64,
    /// Absolute tolerance used.
    pub atol: f64,
    /// Relative tolerance used.
    pub rtol: f64,
    /// Set when the shapes differ.
    pub shape_error: Option<String>,
    /// The reference tensor's largest `|value|` (the scale of [`Criterion::Half`]).
    pub ref_peak: f64,
    /// The rule `pass` and `worst_excess` were decided by.
    pub criterion: Criterion,
}

impl Check {
    /// Compares two tensors.
    pub fn compare(
        name: &str,
        want_shape: &[usize],
        want: &[f32],
        got_shape: &[usize],
        got: &[f32],
        atol: f64,
        rtol: f64,
    ) -> Check {
        if want_shape != got_shape || want.len() != got.len() {
            return Check {
                name: name.to_string(),
                pass: false,
                max_abs_err: f64::INFINITY,
                worst_excess: f64::INFINITY,
                atol,
                rtol,
                shape_error: Some(format!("expected shape {want_shape:?}, got {got_shape:?}")),
                ref_peak: peak(want),
                criterion: Criterion::Tolerance,
            };
        }
        let mut max_abs_err = 0.0f64;
        let mut worst_excess = f64::NEG_INFINITY;
        for (&w, &g) in want.iter().zip(got) {
            let err = (g as f64 - w as f64).abs();
            let err = if err.is_nan() { f64::INFINITY } else { err };
            max_abs_err = max_abs_err.max(err);
            worst_excess = worst_excess.max(err - (atol + rtol * (w as f64).abs()));
        }
        Check {
            name: name.to_string(),
            pass: worst_excess <= 0.0,
            max_abs_err,
            worst_excess,
            atol,
            rtol,
            shape_error: None,
            ref_peak: peak(want),
            criterion: Criterion::Tolerance,
        }
    }

    /// Whether this is an exact check (`atol` and `rtol` both 0: integers, masks).
    pub fn is_exact(&self) -> bool {
        self.atol == 0.0 && self.rtol == 0.0
    }

    /// This check decided by `criterion` ([`Criterion::Tolerance`]: unchanged). Under
    /// [`Criterion::Half`] a tensor passes when its largest error is finite (so is every
    /// value: a NaN or infinite one makes the error infinite) and at most
    /// [`HALF_PEAK_FRACTION`] of `ref_peak`; exact checks and shape errors are kept as they are.
    pub fn judged(mut self, criterion: Criterion) -> Check {
        if criterion == Criterion::Half && self.shape_error.is_none() && !self.is_exact() {
            let allowed = HALF_PEAK_FRACTION * self.ref_peak;
            self.worst_excess = if self.max_abs_err.is_finite() {
                self.max_abs_err - allowed
            } else {
                f64::INFINITY
            };
            self.pass = self.worst_excess <= 0.0;
            self.criterion = Criterion::Half;
        }
        self
    }

    /// The largest error in units of what the check's criterion allows: `max_abs_err / atol`
    /// under [`Criterion::Tolerance`], `max_abs_err / (HALF_PEAK_FRACTION * ref_peak)` under
    /// [`Criterion::Half`] (0 for no error, infinite for an error with nothing allowed).
    pub fn error_ratio(&self) -> f64 {
        let allowed = match self.criterion {
            Criterion::Tolerance => self.atol,
            Criterion::Half => HALF_PEAK_FRACTION * self.ref_peak,
        };
        if self.max_abs_err == 0.0 {
            0.0
        } else if allowed > 0.0 {
            self.max_abs_err / allowed
        } else {
            f64::INFINITY
        }
    }
}

/// The largest `|value|` (0 for no value).
fn peak(values: &[f32]) -> f64 {
    values.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()))
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shape_error {
            Some(e) => write!(f, "{}: {e}", self.name),
            None if self.criterion == Criterion::Half => write!(
                f,
                "{}: max abs err {:.3e} = {:.2} % of the reference peak {:.3e} (half: <= {} %){}",
                self.name,
                self.max_abs_err,
                100.0 * self.max_abs_err / self.ref_peak,
                self.ref_peak,
                100.0 * HALF_PEAK_FRACTION,
                if self.pass { "" } else { " FAIL" }
            ),
            None => write!(
                f,
                "{}: max abs err {:.3e} (atol {:.0e}, rtol {:.0e}){}",
                self.name,
                self.max_abs_err,
                self.atol,
                self.rtol,
                if self.pass { "" } else { " FAIL" }
            ),
        }
    }
}

/// Asserts that every check passed, printing all of them on failure (for tests).
pub fn assert_all_pass(fixture: &str, checks: &[Check]) {
    assert!(!checks.is_empty(), "{fixture}: no tensor was compared");
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{fixture}: {} of {} tensors out of tolerance:\n  {}",
        failed.len(),
        checks.len(),
        failed.join("\n  ")
    );
}

/// `name -> [(shape, values)]` of every `prefix*` float tensor (debug helper).
pub fn tensors_with_prefix(
    fx: &Fixture,
    prefix: &str,
) -> Result<BTreeMap<String, FixtureTensor<f32>>> {
    fx.names_with_prefix(prefix)
        .into_iter()
        .map(|n| fx.f32(&n).map(|t| (n, t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(got: &[f32]) -> Check {
        Check::compare("t", &[3], &[1.0, -4.0, 2.0], &[3], got, 1e-5, 1e-4)
    }

    #[test]
    fn half_criterion_is_five_percent_of_the_peak_and_finite() {
        // Error 0.19 = 4.75 % of the peak 4: fails the f32 tolerance, passes the half rule.
        let c = check(&[1.19, -4.0, 2.0]);
        assert_eq!(c.ref_peak, 4.0);
        assert!(!c.pass);
        let half = c.clone().judged(Criterion::Half);
        assert!(half.pass, "{half}");
        assert!((half.error_ratio() - 0.19 / 0.2).abs() < 1e-6);
        assert!(half.to_string().contains("reference peak"));
        // The f32 rule is unchanged by judging under it.
        assert_eq!(c.clone().judged(Criterion::Tolerance), c);
        // 0.21 > 5 % of 4.
        assert!(!check(&[1.21, -4.0, 2.0]).judged(Criterion::Half).pass);
        // A value that is not finite fails whatever its size.
        for bad in [f32::NAN, f32::INFINITY] {
            let c = check(&[1.0, bad, 2.0]).judged(Criterion::Half);
            assert!(!c.pass && c.worst_excess.is_infinite(), "{bad}");
        }
    }

    #[test]
    fn half_criterion_keeps_exact_checks_and_shape_errors() {
        let exact = Check::compare("ids", &[2], &[3.0, 7.0], &[2], &[3.0, 7.5], 0.0, 0.0);
        assert!(!exact.clone().judged(Criterion::Half).pass);
        assert_eq!(exact.clone().judged(Criterion::Half), exact);
        let shape = Check::compare("t", &[2], &[1.0, 2.0], &[3], &[1.0, 2.0, 3.0], 1.0, 0.0);
        assert!(!shape.judged(Criterion::Half).pass);
    }
}
