//! Property test on hostile config JSON (bounded, run in CI): byte-level and value-level
//! mutations of the bundle's `config.json` must parse or return an error; a panic fails.
//! `tests/corpus/config/` (when present) holds earlier finds, replayed first.
//! `AUDIOX_FUZZ_CASES=N` runs N cases per target.

use std::path::PathBuf;

use audiox::ModelConfig;
use audiox_core::fuzz::{Mutator, cases, check_no_panic};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
        .join(target)
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny")
}

/// Replaces one number of the config JSON (chosen by `m`) with a boundary value.
fn mutate_config_numbers(m: &mut Mutator, value: &mut serde_json::Value) {
    use serde_json::Value;
    /// JSON pointers of every number under `v`.
    fn numbers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Number(_) => out.push(at),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    numbers(x, format!("{at}/{i}"), out);
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    numbers(x, format!("{at}/{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    numbers(value, String::new(), &mut found);
    if found.is_empty() {
        return;
    }
    let replacement: Value = m
        .pick(&[
            "0",
            "-1",
            "1",
            "2",
            "3",
            "0.5",
            "-0.0",
            "1e308",
            "4294967296",
            "18446744073709551615",
            "9223372036854775807",
            "65537",
        ])
        .parse()
        .unwrap();
    let at = found[m.below(found.len())].clone();
    if let Some(target) = value.pointer_mut(&at) {
        *target = replacement;
    }
}

#[test]
fn mutated_configs_never_panic() {
    let official = std::fs::read_to_string(fixtures().join("bundle/config.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&official).unwrap();
    let parse = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        if let Ok(config) = ModelConfig::from_json_str(&text) {
            // The composed component configs and the sizes derived from them.
            let _ = (config.latent_length(), config.output_samples());
            let _ = (config.dit().heads(), config.dit().seq_len());
            let _ = (config.dit().ffn_hidden(), config.video_frames());
            let _ = config.video_conditioner().map(|v| v.frames());
        }
    };
    // Byte-level mutations (syntax and types) ...
    check_no_panic(
        "config",
        corpus("config"),
        &[official.clone().into_bytes()],
        cases(200),
        3,
        parse,
    );
    // ... and value-level ones: one or two numbers set to boundary values.
    let mut m = Mutator::new(4);
    let structured: Vec<Vec<u8>> = (0..cases(200))
        .map(|_| {
            let mut v = value.clone();
            for _ in 0..1 + m.below(2) {
                mutate_config_numbers(&mut m, &mut v);
            }
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    check_no_panic("config-values", corpus("config"), &structured, 0, 5, parse);
}
