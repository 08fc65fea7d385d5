//! What every component's config shares: the official inference config text, the checks the
//! config types use, and a reader for one section of a config file.
//!
//! Each component owns its config type next to its model (`audiox_vae::VaeConfig`,
//! `audiox_mmdit::DitConfig`, `audiox_encoders::conditioners::VideoConditionerConfig`, ...);
//! each deserializes its own section of the official JSON. The facade crate (`audiox`)
//! composes them into the whole-file `ModelConfig` and holds the checks that span sections.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// The official inference config, as shipped by the reference implementation
/// (`configs/audiox_turbo_infer_4step.json`).
pub const OFFICIAL_INFER_CONFIG: &str = include_str!("../assets/audiox_turbo_infer_4step.json");

/// `value` must be at least 1: an [`Error::Config`] naming `field` otherwise.
pub fn positive(field: impl Into<String>, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(field, "must be at least 1"));
    }
    Ok(())
}

/// `a * b`, or an [`Error::Config`] naming `field` when the product does not fit in `usize`.
pub fn checked_mul(field: impl Into<String>, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::config(field, format!("{a} x {b} overflows")))
}

/// Deserializes the section at the dotted `path` of a parsed config (`"model.pretransform.config"`;
/// a numeric part indexes an array: `"model.conditioning.configs.1.config"`), or at a JSON
/// pointer when `path` starts with `/` (for keys that hold dots:
/// `"/_tiny_hardcoded_sizes/synchformer/0"`). A missing section or a bad value is an
/// [`Error::Config`] naming the path of the offending field.
pub fn section<T: DeserializeOwned>(config: &Value, path: &str) -> Result<T> {
    let found = if path.starts_with('/') {
        config.pointer(path)
    } else {
        path.split('.')
            .filter(|p| !p.is_empty())
            .try_fold(config, |value, part| match part.parse::<usize>() {
                Ok(i) => value.get(i),
                Err(_) => value.get(part),
            })
    };
    let value = found.ok_or_else(|| Error::config(path, "missing"))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (path.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => path.to_string(),
            (false, i) if i.starts_with('[') => format!("{path}{i}"),
            (false, _) => format!("{path}.{inner}"),
        };
        Error::config(field, e.inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_read_by_its_path() {
        let json: Value = serde_json::from_str(OFFICIAL_INFER_CONFIG).unwrap();
        let rate: u32 = section(&json, "sample_rate").unwrap();
        let ids: Vec<String> = section(&json, "model.diffusion.cross_attention_cond_ids").unwrap();
        assert_eq!(ids.len(), 3);
        assert!(rate > 0);
        let first: String = section(&json, "model.conditioning.configs.0.id").unwrap();
        assert_eq!(first, ids[0]);
        let same: String = section(&json, "/model/conditioning/configs/0/id").unwrap();
        assert_eq!(same, first);
    }

    #[test]
    fn a_bad_section_names_its_path() {
        let json: Value = serde_json::from_str(OFFICIAL_INFER_CONFIG).unwrap();
        let field = |e: Error| match e {
            Error::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        };
        let err = section::<u32>(&json, "model.nope").unwrap_err();
        assert_eq!(field(err), "model.nope");
        let err =
            section::<Vec<u32>>(&json, "model.diffusion.cross_attention_cond_ids").unwrap_err();
        assert_eq!(field(err), "model.diffusion.cross_attention_cond_ids[0]");
    }

    #[test]
    fn checks_name_their_field() {
        assert!(positive("a", 1).is_ok());
        assert!(matches!(positive("a", 0), Err(Error::Config { field, .. }) if field == "a"));
        assert_eq!(checked_mul("b", 3, 4).unwrap(), 12);
        assert!(
            matches!(checked_mul("b", usize::MAX, 2), Err(Error::Config { field, .. }) if field == "b")
        );
    }
}
