//! The parity harness: every fixture of a golden fixture set, run through the matching Rust
//! component and compared with the reference (see `examples/parity.rs`, which prints one line
//! per fixture, and `tests/parity.rs`, which runs the same checks under `cargo test`).

use std::collections::BTreeMap;

use burn::tensor::Device;

use audiox_core::fixtures::{Check, Fixture, FixtureSet};
use audiox_core::weights::{StateDict, resolve_official_keys};
use audiox_core::{Error, Result};

/// The outcome of one fixture (or one bundle request).
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every compared tensor is within tolerance.
    Pass {
        /// Number of tensors compared.
        compared: usize,
    },
    /// At least one tensor is out of tolerance; the worst one.
    Fail {
        /// The check with the largest excess over its tolerance.
        worst: Check,
        /// Number of failing tensors.
        failed: usize,
        /// Number of tensors compared.
        compared: usize,
    },
    /// The component is not implemented yet.
    NotImplemented,
    /// Running the component returned an error.
    Error(String),
}

impl Outcome {
    fn from_checks(checks: Vec<Check>) -> Self {
        if checks.is_empty() {
            return Outcome::Error("no tensor was compared".into());
        }
        let compared = checks.len();
        let failed: Vec<&Check> = checks.iter().filter(|c| !c.pass).collect();
        match failed.iter().max_by(|a, b| a.worst_excess.total_cmp(&b.worst_excess)) {
            None => Outcome::Pass { compared },
            Some(worst) => Outcome::Fail {
                worst: (*worst).clone(),
                failed: failed.len(),
                compared,
            },
        }
    }

    /// Whether this counts as a failure for the harness's exit code.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Fail { .. } | Outcome::Error(_))
    }
}

type Checker = fn(&Fixture, &Device) -> Result<Vec<Check>>;

/// The tensor fixtures this crate knows how to run, by name.
fn tensor_checkers() -> BTreeMap<&'static str, Checker> {
    let mut m: BTreeMap<&'static str, Checker> = BTreeMap::new();
    m.insert("vae_decoder", audiox_vae::parity::check_vae_decoder);
    m.insert("vae_encoder", audiox_vae::parity::check_vae_encoder);
    m
}

/// Runs one entry of the set's index. Bundle requests are reported by [`run_bundle`].
pub fn run_fixture(set: &FixtureSet, name: &str, device: &Device) -> Outcome {
    if name == "ckpt_formats" {
        return match check_ckpt_formats(set) {
            Ok(checks) => Outcome::from_checks(checks),
            Err(e) => Outcome::Error(e.to_string()),
        };
    }
    let Some(checker) = tensor_checkers().get(name).copied() else {
        return Outcome::NotImplemented;
    };
    match set.fixture(name).and_then(|fx| checker(&fx, device)) {
        Ok(checks) => Outcome::from_checks(checks),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// The bundle's requests (`bundle/<request>`), each with its outcome.
pub fn run_bundle(set: &FixtureSet, _device: &Device) -> Vec<(String, Outcome)> {
    let Some(requests) = set
        .entry("bundle")
        .and_then(|b| b.get("requests"))
        .and_then(|r| r.as_object())
    else {
        return Vec::new();
    };
    requests
        .keys()
        .map(|r| (format!("bundle/{r}"), Outcome::NotImplemented))
        .collect()
}

/// `ckpt_formats`: every tensor of every official container decodes to the recorded sums, and
/// the student files' keys resolve where the official loader puts them. Each file becomes one
/// check (pass/fail, error = worst relative sum difference).
pub fn check_ckpt_formats(set: &FixtureSet) -> Result<Vec<Check>> {
    let path = set.dir().join("ckpt_formats.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Fixture {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let bad = |m: &str| Error::Fixture {
        path: path.clone(),
        message: m.to_string(),
    };
    let files = meta["files"].as_object().ok_or_else(|| bad("no `files`"))?;
    let mut checks = Vec::new();
    for (file, info) in files {
        let dict = StateDict::open(set.dir().join(file))?;
        let tensors = info["tensors"].as_object().ok_or_else(|| bad("no `tensors`"))?;
        let mut worst = 0.0f64;
        let mut problems = Vec::new();
        if dict.len() != tensors.len() {
            problems.push(format!("{} tensors stored, {} described", dict.len(), tensors.len()));
        }
        for (name, t) in tensors {
            let Some(stored) = dict.get(name) else {
                problems.push(format!("`{name}` missing"));
                continue;
            };
            let shape: Vec<usize> = serde_json::from_value(t["shape"].clone()).map_err(|e| bad(&e.to_string()))?;
            if stored.shape() != shape.as_slice() {
                problems.push(format!("`{name}` shape {:?} != {shape:?}", stored.shape()));
            }
            let (_, values) = dict.read_f32(name)?;
            let sum: f64 = values.iter().map(|&x| x as f64).sum();
            let sum_sq: f64 = values.iter().map(|&x| (x as f64) * (x as f64)).sum();
            for (got, key) in [(sum, "sum"), (sum_sq, "sum_sq")] {
                let want = t[key].as_f64().ok_or_else(|| bad("no sum"))?;
                worst = worst.max((got - want).abs() / want.abs().max(1.0));
            }
        }
        // Official key rule on the student layout.
        let targets: BTreeMap<String, Vec<usize>> = tensors
            .values()
            .filter_map(|t| {
                let target = t.get("loads_into")?.as_str()?;
                Some((target.to_string(), serde_json::from_value(t["shape"].clone()).ok()?))
            })
            .collect();
        if !targets.is_empty() {
            let (resolved, dropped) = resolve_official_keys(&dict, &targets);
            for (stored, t) in tensors {
                match t.get("loads_into").and_then(|v| v.as_str()) {
                    Some(target) => {
                        if resolved.read_f32(target)?.1 != dict.read_f32(stored)?.1 {
                            problems.push(format!("`{stored}` did not load into `{target}`"));
                        }
                    }
                    None if !dropped.contains(stored) => problems.push(format!("`{stored}` was not dropped")),
                    None => {}
                }
            }
        }
        let pass = problems.is_empty() && worst <= 1e-7;
        checks.push(Check {
            name: file.clone(),
            pass,
            max_abs_err: worst,
            worst_excess: if pass { -1.0 } else { worst.max(1.0) },
            atol: 1e-7,
            rtol: 0.0,
            shape_error: (!problems.is_empty()).then(|| problems.join("; ")),
        });
    }
    Ok(checks)
}
