//! T5 encoder: parity with the `t5_encoder` fixture, the full-size structure, the tied
//! embedding, and bad input.

use audiox_core::Error;
use audiox_core::fixtures::{FixtureSet, assert_all_pass, manifest_dir};
use audiox_core::weights::{
    Component, StateDict, WeightSource, compare_with_manifest, read_manifest,
};
use audiox_encoders::parity::text::check_t5_encoder;
use audiox_encoders::t5::{T5Config, T5Encoder, relative_position_bucket};
use burn::tensor::{Device, Int, Tensor, TensorData};

#[test]
fn t5_encoder_matches_the_reference() {
    let set = FixtureSet::open_default().unwrap();
    if !set.contains("t5_encoder") {
        eprintln!("no t5_encoder fixture in {}; skipped", set.dir().display());
        return;
    }
    let fx = set.fixture("t5_encoder").unwrap();
    let checks = check_t5_encoder(&fx, &Device::flex()).unwrap();
    let stored = fx.names_with_prefix("mid.").len() + fx.names_with_prefix("out.").len();
    assert_eq!(
        checks.len(),
        stored,
        "compared {} of {stored} tensors",
        checks.len()
    );
    assert_all_pass("t5_encoder", &checks);
}

/// The t5-base encoder has exactly the names and shapes of `t5_base.json` (the tied
/// `encoder.embed_tokens.weight` is declared, not held). Nothing is allocated.
#[test]
fn full_size_t5_matches_the_manifest() {
    let t5 = T5Config::t5_base().init(&Device::flex());
    let manifest = read_manifest(manifest_dir().join("t5_base.json")).unwrap();
    let diff = compare_with_manifest(&t5, &T5Encoder::layout(), &manifest);
    assert!(diff.is_empty(), "{diff}");
}

/// Known buckets of the bidirectional rule with 32 buckets and distance 128 (transformers'
/// `_relative_position_bucket`): exact below 8, logarithmic up to 128, clipped beyond.
#[test]
fn relative_position_buckets() {
    let b = |offset| relative_position_bucket(offset, 32, 128);
    assert_eq!(b(0), 0);
    assert_eq!(b(-1), 1);
    assert_eq!(b(1), 17);
    assert_eq!(b(-7), 7);
    assert_eq!(b(-8), 8);
    assert_eq!(b(-12), 9);
    assert_eq!(b(-127), 15);
    assert_eq!(b(-500), 15);
    assert_eq!(b(500), 31);
    assert_eq!(b(8), 24);
}

fn tiny_config() -> T5Config {
    T5Config::new(40, 16, 4, 24, 2, 4)
}

/// Random tiny weights under Hugging Face names, with the token table under `table_key`.
fn tiny_dict(table_key: &str) -> StateDict {
    let config = tiny_config();
    let mut tensors = Vec::new();
    let mut seed = 1u32;
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    let d = config.d_model;
    let inner = config.num_heads * config.d_kv;
    tensors.push((
        table_key.to_string(),
        vec![config.vocab_size, d],
        values(config.vocab_size * d),
    ));
    tensors.push((
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".into(),
        vec![32, config.num_heads],
        values(32 * config.num_heads),
    ));
    for i in 0..config.num_layers {
        let p = format!("encoder.block.{i}.layer.");
        for w in ["q", "k", "v"] {
            tensors.push((
                format!("{p}0.SelfAttention.{w}.weight"),
                vec![inner, d],
                values(inner * d),
            ));
        }
        tensors.push((
            format!("{p}0.SelfAttention.o.weight"),
            vec![d, inner],
            values(inner * d),
        ));
        tensors.push((format!("{p}0.layer_norm.weight"), vec![d], values(d)));
        tensors.push((
            format!("{p}1.DenseReluDense.wi.weight"),
            vec![config.d_ff, d],
            values(config.d_ff * d),
        ));
        tensors.push((
            format!("{p}1.DenseReluDense.wo.weight"),
            vec![d, config.d_ff],
            values(config.d_ff * d),
        ));
        tensors.push((format!("{p}1.layer_norm.weight"), vec![d], values(d)));
    }
    tensors.push(("encoder.final_layer_norm.weight".into(), vec![d], values(d)));
    StateDict::from_f32("memory", tensors).unwrap()
}

fn ids(values: Vec<i64>, b: usize, n: usize) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values, [b, n]), &Device::flex())
}

/// A file holding only `encoder.embed_tokens.weight` (no `shared.weight`) loads the same table.
#[test]
fn either_copy_of_the_tied_embedding_loads() {
    let device = Device::flex();
    let (a, report_a) = T5Encoder::load(
        &tiny_config(),
        &[WeightSource::new(&tiny_dict("shared.weight"))],
        &device,
    )
    .unwrap();
    let (b, report_b) = T5Encoder::load(
        &tiny_config(),
        &[WeightSource::new(&tiny_dict("encoder.embed_tokens.weight"))],
        &device,
    )
    .unwrap();
    assert!(report_a.unused.is_empty() && report_b.unused.is_empty());
    let mask = Tensor::<2>::ones([1, 5], &device);
    let x = a
        .forward(ids(vec![1, 2, 3, 4, 5], 1, 5), mask.clone())
        .unwrap();
    let y = b.forward(ids(vec![1, 2, 3, 4, 5], 1, 5), mask).unwrap();
    assert_eq!(
        audiox_core::tensor::to_vec(x),
        audiox_core::tensor::to_vec(y)
    );
    // Neither copy: the error names the official key.
    let empty = StateDict::from_f32("memory", vec![]).unwrap();
    match T5Encoder::load(&tiny_config(), &[WeightSource::new(&empty)], &device) {
        Err(Error::MissingWeight { key, .. }) => assert_eq!(key, "shared.weight"),
        other => panic!("expected MissingWeight, got {:?}", other.map(|_| ())),
    }
}

/// Padding only affects the padded positions' keys: the real tokens' outputs equal those of
/// the unpadded sequence.
#[test]
fn padded_keys_are_ignored() {
    let device = Device::flex();
    let (t5, _) = T5Encoder::load(
        &tiny_config(),
        &[WeightSource::new(&tiny_dict("shared.weight"))],
        &device,
    )
    .unwrap();
    let short = t5
        .forward(ids(vec![5, 6, 7], 1, 3), Tensor::ones([1, 3], &device))
        .unwrap();
    let mask = Tensor::<2>::from_data(TensorData::new(vec![1f32, 1., 1., 0., 0.], [1, 5]), &device);
    let padded = t5.forward(ids(vec![5, 6, 7, 0, 0], 1, 5), mask).unwrap();
    let a = audiox_core::tensor::to_vec(short);
    let b = audiox_core::tensor::to_vec(padded.narrow(1, 0, 3));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    // Not exactly 0: the relative position bias table is the same but sums run over more keys
    // with weight exp(-huge) = 0, so only rounding differs.
    assert!(err < 1e-5, "{err}");
}

#[test]
fn bad_token_input_is_a_typed_error() {
    let device = Device::flex();
    let (t5, _) = T5Encoder::load(
        &tiny_config(),
        &[WeightSource::new(&tiny_dict("shared.weight"))],
        &device,
    )
    .unwrap();
    // An id outside the vocabulary.
    let r = t5.forward(ids(vec![1, 40], 1, 2), Tensor::ones([1, 2], &device));
    assert!(matches!(r, Err(Error::InvalidRequest(_))), "{r:?}");
    // A mask of another shape.
    let r = t5.forward(ids(vec![1, 2], 1, 2), Tensor::ones([1, 3], &device));
    assert!(matches!(r, Err(Error::InputShape { .. })), "{r:?}");
}

#[test]
fn hf_config_parsing() {
    let config = T5Config::from_hf_json(&serde_json::json!({
        "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12,
        "vocab_size": 32128, "feed_forward_proj": "relu"
    }))
    .unwrap();
    assert_eq!(config.relative_attention_max_distance, 128);
    assert_eq!(config.layer_norm_epsilon, 1e-6);
    let gated = T5Config::from_hf_json(&serde_json::json!({"feed_forward_proj": "gated-gelu"}));
    assert!(matches!(gated, Err(Error::Config { .. })));
    let missing = T5Config::from_hf_file("/nonexistent/config.json");
    assert!(matches!(missing, Err(Error::Io { .. })));
}

/// `forward_masked` encodes only the real-token prefix when the mask is right padding, and
/// the whole sequence otherwise; both equal the masked full encoding.
#[test]
fn masked_encoding_skips_padding_without_changing_the_result() {
    let device = Device::flex();
    // A small random encoder (burn's default initialisers; checked to give varied outputs).
    let t5 = T5Config::new(50, 16, 4, 32, 2, 4).init(&device);
    let (b, n) = (3usize, 12usize);
    let ids: Vec<i64> = (0..b * n).map(|i| ((i * 7 + 3) % 50) as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, n]), &device);
    let prefix = |lens: &[usize]| {
        let v: Vec<f32> = lens
            .iter()
            .flat_map(|&l| (0..n).map(move |j| if j < l { 1.0 } else { 0.0 }))
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [b, n]), &device)
    };
    let holes = {
        let mut v = vec![1.0f32; b * n];
        v[3] = 0.0; // a padded position before real ones: not a prefix mask
        Tensor::<2>::from_data(TensorData::new(v, [b, n]), &device)
    };
    for (label, mask) in [
        ("prefix 5/9/2", prefix(&[5, 9, 2])),
        ("prefix 1/1/1", prefix(&[1, 1, 1])),
        ("full", prefix(&[n, n, n])),
        ("holes", holes),
    ] {
        let fast = t5.forward_masked(ids.clone(), mask.clone()).unwrap();
        let full =
            audiox_encoders::t5::mask_padding(t5.forward(ids.clone(), mask.clone()).unwrap(), mask);
        assert_eq!(fast.dims(), [b, n, 16], "{label}");
        let fast: Vec<f32> = fast.into_data().try_to_vec().unwrap();
        let full: Vec<f32> = full.into_data().try_to_vec().unwrap();
        let scale = full.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "{label}: degenerate outputs");
        let err = fast
            .iter()
            .zip(&full)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-5 * scale,
            "{label}: max error {err} (scale {scale})"
        );
    }
}
