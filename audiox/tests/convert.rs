//! The converter on the tiny bundle: the safetensors folder loads through the same builder and
//! gives bit-identical f32 audio; weight norm is fused, unused weights are left out, the
//! manifest names the sources.

use std::path::Path;

use audiox::convert::{Precision, convert};
use audiox::{AudioX, CheckpointPaths, Request};
use audiox_core::fixtures::FixtureSet;
use audiox_core::weights::StateDict;

fn rain(model: &AudioX) -> Vec<Vec<f32>> {
    model.generate(Request::text("rain").seed(7)).unwrap().audio[0]
        .channels()
        .to_vec()
}

fn keys(path: &Path) -> Vec<String> {
    StateDict::open(path)
        .unwrap()
        .keys()
        .map(str::to_string)
        .collect()
}

#[test]
fn converted_folder_gives_bit_identical_audio() {
    let bundle = FixtureSet::open_default().unwrap().bundle_dir();
    let out = tempfile::tempdir().unwrap();
    let paths = CheckpointPaths::from_dir(&bundle).unwrap();
    let done = convert(&paths, out.path(), Precision::F32).unwrap();
    assert!(done.fused > 0, "the VAE's weight-norm pairs are fused");

    let student = out.path().join("audiox_turbo/audiox_turbo.safetensors");
    let converted = keys(&student);
    assert!(
        !converted
            .iter()
            .any(|k| k.ends_with("weight_g") || k.ends_with("weight_v"))
    );
    let original = keys(&bundle.join("audiox_turbo/audiox_turbo.ckpt"));
    // The student's VAE copy is overridden by vae.ckpt, its encoder half never used: left out.
    assert!(
        original
            .iter()
            .any(|k| k.starts_with("pretransform.model."))
    );
    assert!(
        !converted
            .iter()
            .any(|k| k.starts_with("pretransform.model."))
    );
    assert!(converted.len() < original.len());

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["precision"], "f32");
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    let sha = manifest["files"]["audiox_turbo/audiox_turbo.safetensors"]["source_sha256"]
        .as_str()
        .unwrap();
    assert_eq!(sha.len(), 64);

    let a = AudioX::builder().checkpoint_dir(&bundle).build().unwrap();
    let b = AudioX::builder()
        .checkpoint_dir(out.path())
        .build()
        .unwrap();
    assert!(
        b.paths()
            .student
            .as_ref()
            .unwrap()
            .ends_with("audiox_turbo.safetensors")
    );
    assert!(b.supports_video());
    assert_eq!(rain(&a), rain(&b), "f32 conversion is bit-identical");

    // Half precision: half the bytes, still loads and runs.
    let half = tempfile::tempdir().unwrap();
    convert(&paths, half.path(), Precision::Bf16).unwrap();
    let size = |d: &Path| {
        std::fs::metadata(d.join("audiox_turbo/audiox_turbo.safetensors"))
            .unwrap()
            .len()
    };
    assert!(size(half.path()) < size(out.path()) * 6 / 10);
    let c = AudioX::builder()
        .checkpoint_dir(half.path())
        .build()
        .unwrap();
    let audio = rain(&c);
    assert!(audio.iter().flatten().all(|x| x.is_finite()));
}

/// Converting the same checkpoint again writes the same bytes: the safetensors headers (whose
/// metadata the safetensors crate writes in hash order) come out with sorted keys. Eight
/// conversions of three metadata keys in hash order would all agree by chance about once in
/// six to the seventh.
#[test]
fn conversion_is_byte_reproducible() {
    let bundle = FixtureSet::open_default().unwrap().bundle_dir();
    let paths = CheckpointPaths::from_dir(&bundle).unwrap();
    let read = |d: &Path| {
        let mut files = Vec::new();
        let mut pending = vec![d.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    pending.push(p);
                } else if p.extension().is_some_and(|x| x == "safetensors") {
                    files.push((
                        p.strip_prefix(d).unwrap().to_path_buf(),
                        std::fs::read(&p).unwrap(),
                    ));
                }
            }
        }
        files.sort();
        files
    };
    let first = tempfile::tempdir().unwrap();
    convert(&paths, first.path(), Precision::Bf16).unwrap();
    let want = read(first.path());
    assert!(!want.is_empty());
    for _ in 0..7 {
        let again = tempfile::tempdir().unwrap();
        convert(&paths, again.path(), Precision::Bf16).unwrap();
        let got = read(again.path());
        assert_eq!(got.len(), want.len());
        for ((p, a), (q, b)) in got.iter().zip(&want) {
            assert_eq!(p, q);
            assert!(a == b, "{} differs between two conversions", p.display());
        }
    }
    // The files still read as safetensors with their metadata.
    for (p, bytes) in &want {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        let info = meta.metadata().as_ref().unwrap();
        assert_eq!(
            info.get("audiox_precision").map(String::as_str),
            Some("bf16"),
            "{}",
            p.display()
        );
    }
}
