//! The VAE against the golden fixtures of the set in `AUDIOX_FIXTURES_DIR` (or the vendored one).

use audiox_core::fixtures::{FixtureSet, assert_all_pass};
use audiox_vae::parity::{check_vae_decoder, check_vae_encoder};
use burn::tensor::Device;

fn run(
    name: &str,
    check: fn(
        &audiox_core::fixtures::Fixture,
        &Device,
    ) -> audiox_core::Result<Vec<audiox_core::fixtures::Check>>,
) {
    let set = FixtureSet::open_default().unwrap();
    if !set.contains(name) {
        eprintln!("fixture set {} has no {name}; skipped", set.dir().display());
        return;
    }
    let fx = set.fixture(name).unwrap();
    let checks = check(&fx, &Device::flex()).unwrap();
    // Every intermediate the fixture records is compared, plus the outputs.
    let stored = fx.names_with_prefix("mid.").len() + fx.names_with_prefix("out.").len();
    assert_eq!(
        checks.len(),
        stored,
        "{name}: compared {} of {stored} tensors",
        checks.len()
    );
    assert_all_pass(name, &checks);
}

#[test]
fn vae_decoder_matches_the_reference() {
    run("vae_decoder", check_vae_decoder);
}

#[test]
fn vae_encoder_matches_the_reference() {
    run("vae_encoder", check_vae_encoder);
}
