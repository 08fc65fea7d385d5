//! The MAF block and the DiT against the golden fixtures (`maf_block`, `mmdit_forward`) of the
//! set in `AUDIOX_FIXTURES_DIR` (default: the vendored tiny set). Every size comes from the
//! fixture, so other sets of the same format run unchanged.

use audiox_core::fixtures::{FixtureSet, assert_all_pass};
use audiox_mmdit::parity::{check_maf_block, check_mmdit_forward};
use burn::tensor::Device;

fn run(
    name: &str,
    check: fn(
        &audiox_core::fixtures::Fixture,
        &Device,
    ) -> audiox_core::Result<Vec<audiox_core::fixtures::Check>>,
) {
    let set = FixtureSet::open_default().expect("fixture set");
    if !set.contains(name) {
        eprintln!("fixture set has no `{name}`: skipped");
        return;
    }
    let fx = set.fixture(name).expect("fixture");
    let checks = check(&fx, &Device::flex()).unwrap_or_else(|e| panic!("{name}: {e}"));
    for c in &checks {
        println!("{c}");
    }
    assert_all_pass(name, &checks);
}

#[test]
fn maf_block_matches_the_fixture() {
    run("maf_block", check_maf_block);
}

#[test]
fn mmdit_forward_matches_the_fixture() {
    run("mmdit_forward", check_mmdit_forward);
}
