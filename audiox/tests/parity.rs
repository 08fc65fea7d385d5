//! The parity harness under `cargo test`: every fixture of the set in `AUDIOX_FIXTURES_DIR`
//! (or the vendored one) that has an implementation must pass.

use audiox::ModelConfig;
use audiox::parity::{Outcome, run_bundle, run_fixture};
use audiox_core::fixtures::{Criterion, FixtureSet, assert_all_pass};
use audiox_encoders::parity::conditioner::{BUNDLE_REQUESTS, check_bundle_conditioners};
use burn::tensor::Device;

#[test]
fn every_implemented_fixture_passes() {
    let set = FixtureSet::open_default().unwrap();
    let device = Device::flex();
    let mut failures = Vec::new();
    let mut passed = 0;
    for name in set.names() {
        let outcomes = if name == "bundle" {
            run_bundle(&set, &device, Criterion::Tolerance)
        } else {
            vec![(
                name.clone(),
                run_fixture(&set, &name, &device, Criterion::Tolerance),
            )]
        };
        for (name, outcome) in outcomes {
            match &outcome {
                Outcome::Pass { .. } => passed += 1,
                Outcome::NotImplemented => eprintln!("not implemented yet: {name}"),
                _ => failures.push(format!("{name}: {outcome:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(passed > 0);
}

/// The bundle (a tiny model in the official download layout) loaded the official way gives the
/// condition streams of each of its recorded requests; the conditioners' configs come from the
/// bundle's model config, composed with its small sizes.
#[test]
fn bundle_requests_give_the_reference_condition_streams() {
    let set = FixtureSet::open_default().unwrap();
    if !set.bundle_dir().join("expected").exists() {
        eprintln!("no bundle in {}; skipped", set.dir().display());
        return;
    }
    let config = ModelConfig::from_file(set.bundle_dir().join("config.json")).unwrap();
    let configs = (
        config.text_conditioner().unwrap(),
        config.video_conditioner().unwrap(),
        config.audio_conditioner().unwrap(),
    );
    for request in BUNDLE_REQUESTS {
        if !set
            .bundle_dir()
            .join("expected")
            .join(format!("{request}.json"))
            .exists()
        {
            continue;
        }
        let checks = check_bundle_conditioners(&set, request, configs, &Device::flex()).unwrap();
        for c in &checks {
            eprintln!("{request}: {c}");
        }
        assert_all_pass(request, &checks);
    }
}
