//! The parity harness under `cargo test`: every fixture of the set in `AUDIOX_FIXTURES_DIR`
//! (or the vendored one) that has an implementation must pass.

use audiox::parity::{Outcome, run_bundle, run_fixture};
use audiox_core::fixtures::FixtureSet;
use burn::tensor::Device;

#[test]
fn every_implemented_fixture_passes() {
    let set = FixtureSet::open_default().unwrap();
    let device = Device::flex();
    let mut failures = Vec::new();
    let mut passed = 0;
    for name in set.names() {
        let outcomes = if name == "bundle" {
            run_bundle(&set, &device)
        } else {
            vec![(name.clone(), run_fixture(&set, &name, &device))]
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
