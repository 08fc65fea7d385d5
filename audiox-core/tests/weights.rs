//! Weight loading: the official checkpoint containers (fixture `ckpt_formats`), the official
//! key rule, layout transforms, and bad files.

use std::collections::BTreeMap;
use std::path::Path;

use audiox_core::Error;
use audiox_core::fixtures::FixtureSet;
use audiox_core::weights::{
    Layout, Source, StateDict, Transform, WeightSource, load_module, official_names,
    resolve_official_keys,
};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde_json::Value;

fn ckpt_formats() -> Option<(FixtureSet, Value)> {
    let set = FixtureSet::open_default().expect("fixture set");
    if !set.contains("ckpt_formats") {
        return None;
    }
    let path = set.dir().join("ckpt_formats.json");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Some((set, meta))
}

fn sums(values: &[f32]) -> (f64, f64) {
    let s = values.iter().map(|&x| x as f64).sum();
    let s2 = values.iter().map(|&x| (x as f64) * (x as f64)).sum();
    (s, s2)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-7 * b.abs().max(1.0)
}

/// Every stored tensor of every official container decodes to the recorded sums, under the
/// recorded names, with the recorded dtype and shape.
#[test]
fn ckpt_formats_tensors_match_their_checksums() {
    let Some((set, meta)) = ckpt_formats() else {
        return;
    };
    let files = meta["files"].as_object().unwrap();
    assert!(!files.is_empty());
    for (file, info) in files {
        let dict = StateDict::open(set.dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let tensors = info["tensors"].as_object().unwrap();
        assert_eq!(dict.len(), tensors.len(), "{file}: tensor count");
        for (name, t) in tensors {
            let stored = dict
                .get(name)
                .unwrap_or_else(|| panic!("{file}: no `{name}`"));
            let shape: Vec<usize> = serde_json::from_value(t["shape"].clone()).unwrap();
            assert_eq!(stored.shape(), shape.as_slice(), "{file}: shape of {name}");
            assert_eq!(
                stored.dtype().to_string(),
                t["dtype"].as_str().unwrap(),
                "{file}: dtype of {name}"
            );
            let (_, values) = dict.read_f32(name).unwrap();
            let (s, s2) = sums(&values);
            assert!(
                close(s, t["sum"].as_f64().unwrap()),
                "{file}: sum of {name}: {s}"
            );
            assert!(
                close(s2, t["sum_sq"].as_f64().unwrap()),
                "{file}: sum_sq of {name}: {s2}"
            );
        }
        if info["top_level"]
            .as_str()
            .unwrap_or("")
            .contains("state_dict")
        {
            assert_eq!(dict.nested_under(), Some("state_dict"), "{file}");
        } else {
            assert_eq!(dict.nested_under(), None, "{file}");
        }
    }
}

/// The official prefix rule assigns every stored student tensor where the reference does,
/// including the junk key that has the shape of a real weight.
#[test]
fn ckpt_formats_student_keys_resolve_like_the_official_loader() {
    let Some((set, meta)) = ckpt_formats() else {
        return;
    };
    for (file, info) in meta["files"].as_object().unwrap() {
        let tensors = info["tensors"].as_object().unwrap();
        if !tensors.values().any(|t| t.get("loads_into").is_some()) {
            continue;
        }
        // The model key space: every key something loads into, with its shape.
        let model_keys: BTreeMap<String, Vec<usize>> = tensors
            .values()
            .filter_map(|t| {
                let target = t["loads_into"].as_str()?;
                Some((
                    target.to_string(),
                    serde_json::from_value(t["shape"].clone()).unwrap(),
                ))
            })
            .collect();
        let dict = StateDict::open(set.dir().join(file)).unwrap();
        let (resolved, dropped) = resolve_official_keys(&dict, &model_keys);
        for (stored, t) in tensors {
            match t["loads_into"].as_str() {
                Some(target) => {
                    let want = dict.read_f32(stored).unwrap().1;
                    let got = resolved.read_f32(target).unwrap().1;
                    assert_eq!(got, want, "{file}: {stored} -> {target}");
                }
                None => assert!(dropped.contains(stored), "{file}: {stored} must be dropped"),
            }
        }
        assert_eq!(resolved.len(), model_keys.len(), "{file}");
    }
}

// ---------------------------------------------------------------------------------------------
// Layout transforms on a small module
// ---------------------------------------------------------------------------------------------

/// A weight-normalised conv stand-in (module type name starts with `WeightNorm`).
#[derive(Module, Debug)]
struct WeightNormConv {
    weight: Param<Tensor<3>>,
    bias: Param<Tensor<1>>,
}

#[derive(Module, Debug)]
struct Small {
    proj: Linear,
    norm: LayerNorm,
    conv: WeightNormConv,
    permuted: Linear,
    gate: Param<Tensor<1>>,
}

fn small(device: &Device) -> Small {
    Small {
        proj: LinearConfig::new(3, 2).init(device),
        norm: LayerNormConfig::new(2).init(device),
        conv: WeightNormConv {
            weight: Param::from_tensor(Tensor::zeros([2, 3, 1], device)),
            bias: Param::from_tensor(Tensor::zeros([2], device)),
        },
        permuted: LinearConfig::new(2, 3).with_bias(false).init(device),
        gate: Param::from_tensor(Tensor::zeros([1], device)),
    }
}

fn layout() -> Layout {
    Layout::new()
        .rename(r"^proj\.", "to_out.0.")
        .with_source(r"^permuted\.weight$", |_, official| Source {
            keys: vec![official.to_string()],
            transform: Transform::PermuteRows(std::sync::Arc::new(vec![2, 0, 1])),
        })
        .scalar(r"^gate$")
        .ignore(r"^dead\.")
}

fn official_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    vec![
        (
            "to_out.0.weight".into(),
            vec![2, 3],
            vec![1., 2., 3., 4., 5., 6.],
        ),
        ("to_out.0.bias".into(), vec![2], vec![0.5, -0.5]),
        ("norm.weight".into(), vec![2], vec![2., 3.]),
        ("norm.bias".into(), vec![2], vec![0.1, 0.2]),
        ("conv.weight_g".into(), vec![2, 1, 1], vec![2., 10.]),
        (
            "conv.weight_v".into(),
            vec![2, 3, 1],
            vec![3., 0., 4., 0., 0., 1.],
        ),
        ("conv.bias".into(), vec![2], vec![7., 8.]),
        (
            "permuted.weight".into(),
            vec![3, 2],
            vec![1., 2., 3., 4., 5., 6.],
        ),
        ("gate".into(), vec![], vec![-2.5]),
        ("dead.weight".into(), vec![1], vec![0.]),
        ("stray.weight".into(), vec![1], vec![0.]),
    ]
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    audiox_core::tensor::to_vec(t)
}

#[test]
fn layout_transforms_are_applied() {
    let device = Device::flex();
    let dict = StateDict::from_f32("memory", official_tensors()).unwrap();
    let (m, report) = load_module(small(&device), &layout(), &[WeightSource::new(&dict)]).unwrap();
    // Linear: torch [out, in] -> burn [in, out].
    assert_eq!(values(m.proj.weight.val()), vec![1., 4., 2., 5., 3., 6.]);
    assert_eq!(values(m.proj.bias.as_ref().unwrap().val()), vec![0.5, -0.5]);
    // LayerNorm weight/bias -> gamma/beta.
    assert_eq!(values(m.norm.gamma.val()), vec![2., 3.]);
    // Weight norm: g * v / ||v|| per output channel.
    assert_eq!(values(m.conv.weight.val()), vec![1.2, 0., 1.6, 0., 0., 10.]);
    // Rows 2, 0, 1 of [3, 2], transposed.
    assert_eq!(
        values(m.permuted.weight.val()),
        vec![5., 1., 3., 6., 2., 4.]
    );
    // A 0-d official scalar into a [1] parameter.
    assert_eq!(values(m.gate.val()), vec![-2.5]);
    assert_eq!(report.applied.len(), 8);
    assert_eq!(report.unused.len(), 1, "{:?}", report.unused);
    assert_eq!(report.unused[0].1, "stray.weight");
    assert_eq!(report.ignored.len(), 1);
    // The layout also names the official key set, without reading anything.
    let names = official_names(&small(&device), &layout());
    assert_eq!(names.get("conv.weight_g"), Some(&vec![2, 1, 1]));
    assert_eq!(names.get("to_out.0.weight"), Some(&vec![2, 3]));
    assert_eq!(names.get("permuted.weight"), Some(&vec![3, 2]));
    assert_eq!(names.get("gate"), Some(&vec![]));
    assert_eq!(names.len(), 9);
}

#[test]
fn missing_weight_names_the_key() {
    let device = Device::flex();
    let tensors = official_tensors()
        .into_iter()
        .filter(|t| t.0 != "conv.weight_v")
        .collect();
    let dict = StateDict::from_f32("memory", tensors).unwrap();
    match load_module(small(&device), &layout(), &[WeightSource::new(&dict)]) {
        Err(Error::MissingWeight { key, param, .. }) => {
            assert_eq!(key, "conv.weight_g");
            assert_eq!(param, "conv.weight");
        }
        other => panic!("expected MissingWeight, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn wrong_shape_names_the_key_and_both_shapes() {
    let device = Device::flex();
    let mut tensors = official_tensors();
    tensors[0] = ("to_out.0.weight".into(), vec![3, 2], vec![0.; 6]);
    let dict = StateDict::from_f32("memory", tensors).unwrap();
    match load_module(small(&device), &layout(), &[WeightSource::new(&dict)]) {
        Err(Error::ShapeMismatch {
            key,
            expected,
            found,
            ..
        }) => {
            assert_eq!(key, "to_out.0.weight");
            assert_eq!(expected, vec![2, 3]);
            assert_eq!(found, vec![3, 2]);
        }
        other => panic!("expected ShapeMismatch, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn later_sources_override_earlier_ones_and_prefixes_apply() {
    let device = Device::flex();
    let base = StateDict::from_f32("base", official_tensors()).unwrap();
    let over = StateDict::from_f32(
        "over",
        vec![
            ("sub.norm.weight".into(), vec![2], vec![9., 9.]),
            ("sub.norm.bias".into(), vec![2], vec![1., 1.]),
        ],
    )
    .unwrap();
    let sources = [
        WeightSource::new(&base),
        WeightSource::with_prefix(&over, "sub."),
    ];
    let (m, report) = load_module(small(&device), &layout(), &sources).unwrap();
    assert_eq!(values(m.norm.gamma.val()), vec![9., 9.]);
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.param == "norm.gamma" && a.file == Path::new("over"))
    );
    // The base file's norm tensors were shadowed: overridden, not unused.
    assert!(report.overridden.iter().any(|(_, k)| k == "norm.weight"));
    assert!(!report.unused.iter().any(|(_, k)| k == "norm.weight"));
}

// ---------------------------------------------------------------------------------------------
// Bad files
// ---------------------------------------------------------------------------------------------

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn expect_weight_file_error(path: &Path) {
    match StateDict::open(path) {
        Err(Error::WeightFile { .. }) => {}
        Err(other) => panic!("{}: expected WeightFile, got {other}", path.display()),
        Ok(d) => panic!(
            "{}: opened a bad file ({} tensors)",
            path.display(),
            d.len()
        ),
    }
}

#[test]
fn truncated_and_corrupt_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let Some((set, _)) = ckpt_formats() else {
        return;
    };
    let ckpt = std::fs::read(set.dir().join("ckpt/vae_lightning_f32.ckpt")).unwrap();
    let st = std::fs::read(set.dir().join("vae_decoder.safetensors")).unwrap();

    expect_weight_file_error(&write(dir.path(), "empty.ckpt", b""));
    expect_weight_file_error(&write(dir.path(), "garbage.ckpt", &[0x13; 1000]));
    expect_weight_file_error(&write(dir.path(), "half.ckpt", &ckpt[..ckpt.len() / 2]));
    expect_weight_file_error(&write(dir.path(), "head.ckpt", &ckpt[..100]));
    expect_weight_file_error(&write(dir.path(), "half.safetensors", &st[..st.len() / 2]));
    expect_weight_file_error(&write(dir.path(), "head.safetensors", &st[..20]));
    let mut bad_header = st.clone();
    bad_header[12] = b'#';
    expect_weight_file_error(&write(dir.path(), "badjson.safetensors", &bad_header));
    assert!(matches!(
        StateDict::open(dir.path().join("absent.ckpt")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn integer_tensors_are_refused_as_weights() {
    let Some((set, _)) = ckpt_formats() else {
        return;
    };
    // The t5 fixture holds int64 token ids next to its weights.
    let dict = StateDict::open(set.dir().join("t5_encoder.safetensors")).unwrap();
    match dict.read_f32("in.input_ids") {
        Err(Error::UnsupportedDType { key, dtype, .. }) => {
            assert_eq!(key, "in.input_ids");
            assert_eq!(dtype, "int64");
        }
        other => panic!("expected UnsupportedDType, got {other:?}"),
    }
}

#[test]
fn a_fused_weight_norm_kernel_loads_like_its_pair() {
    let device = Device::flex();
    let pair = StateDict::from_f32("pair", official_tensors()).unwrap();
    let (from_pair, _) =
        load_module(small(&device), &layout(), &[WeightSource::new(&pair)]).unwrap();
    // The converter's form: `conv.weight` = the fused kernel, no `weight_g`/`weight_v`.
    let g = [2., 10.];
    let v = [3., 0., 4., 0., 0., 1.];
    let fused = audiox_core::weights::fuse_weight_norm(&g, &v, 2);
    let tensors = official_tensors()
        .into_iter()
        .filter(|t| !t.0.starts_with("conv.weight_"))
        .chain([("conv.weight".to_string(), vec![2, 3, 1], fused)])
        .collect();
    let dict = StateDict::from_f32("fused", tensors).unwrap();
    let (m, report) = load_module(small(&device), &layout(), &[WeightSource::new(&dict)]).unwrap();
    assert_eq!(
        values(m.conv.weight.val()),
        values(from_pair.conv.weight.val())
    );
    assert!(report.unused.iter().all(|(_, k)| k != "conv.weight"));
    // The student key rule keeps the fused name too.
    let names = official_names(&small(&device), &layout());
    let (resolved, dropped) = audiox_core::weights::resolve_official_keys(&dict, &names);
    assert!(
        resolved.get("conv.weight").is_some(),
        "dropped: {dropped:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Safetensors from memory (the embedded demo model's path)
// ---------------------------------------------------------------------------------------------

#[test]
fn safetensors_bytes_read_like_the_file_and_bad_bytes_are_typed_errors() {
    let set = FixtureSet::open_default().unwrap();
    let path = set.dir().join("vae_decoder.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = StateDict::open(&path).unwrap();
    let memory =
        StateDict::from_safetensors_bytes("in-memory/vae.safetensors", bytes.clone()).unwrap();
    assert_eq!(memory.path(), Path::new("in-memory/vae.safetensors"));
    assert_eq!(
        file.keys().collect::<Vec<_>>(),
        memory.keys().collect::<Vec<_>>()
    );
    for key in file.keys() {
        assert_eq!(
            file.read_f32(key).unwrap(),
            memory.read_f32(key).unwrap(),
            "{key}"
        );
    }
    // A 'static slice (as include_bytes! gives) is read without a copy.
    let leaked: &'static [u8] = Box::leak(bytes.clone().into_boxed_slice());
    let borrowed = StateDict::from_safetensors_bytes("static", leaked).unwrap();
    assert_eq!(borrowed.len(), file.len());

    for bad in [&bytes[..bytes.len() / 2], &bytes[..20], &b""[..]] {
        match StateDict::from_safetensors_bytes("bad", bad.to_vec()) {
            Err(Error::WeightFile { path, .. }) => assert_eq!(path, Path::new("bad")),
            other => panic!("expected WeightFile, got {other:?}"),
        }
    }
}
