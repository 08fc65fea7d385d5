//! Synchformer against the golden fixture `synchformer` of the set in `AUDIOX_FIXTURES_DIR`
//! (or the vendored one), and its full-size structure against the parameter manifest.

use audiox_core::fixtures::{FixtureSet, assert_all_pass, manifest_dir};
use audiox_core::weights::{compare_with_manifest, read_manifest};
use audiox_encoders::parity::synchformer::check_synchformer;
use audiox_encoders::synchformer::{Synchformer, SynchformerConfig, WEIGHT_PREFIX};
use burn::tensor::Device;

#[test]
fn synchformer_matches_the_reference() {
    let set = FixtureSet::open_default().unwrap();
    if !set.contains("synchformer") {
        eprintln!(
            "fixture set {} has no synchformer; skipped",
            set.dir().display()
        );
        return;
    }
    let fx = set.fixture("synchformer").unwrap();
    let checks = check_synchformer(&fx, &Device::flex()).unwrap();
    for c in &checks {
        println!("{c}");
    }
    // Every intermediate the fixture records is compared, plus the output.
    let stored = fx.names_with_prefix("mid.").len() + fx.names_with_prefix("out.").len();
    assert_eq!(
        checks.len(),
        stored,
        "compared {} of {stored} tensors",
        checks.len()
    );
    assert_all_pass("synchformer", &checks);
}

/// The full-size extractor holds exactly the checkpoint's `vfeat_extractor.*` names and shapes
/// (nothing is allocated: parameters stay lazy).
#[test]
fn full_size_structure_matches_the_manifest() {
    let manifest = read_manifest(manifest_dir().join("synchformer.json")).unwrap();
    let manifest = manifest
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(WEIGHT_PREFIX).map(|k| (k.to_string(), v)))
        .collect();
    let model = SynchformerConfig::full_size()
        .init(&Device::flex())
        .unwrap();
    let diff = compare_with_manifest(&model, &Synchformer::layout(), &manifest);
    assert!(diff.is_empty(), "{diff}");
}
