//! The parity harness: runs every fixture of a golden fixture set through the matching Rust
//! component and compares with the reference.
//!
//! ```text
//! cargo run --release -p audiox --example parity -- --fixtures fixtures/tiny
//! ```
//!
//! Prints one line per fixture (`PASS name`, `FAIL name (worst ...)`, `SKIP name (not
//! implemented)`), then `parity: P pass, F fail, S not implemented`; exits non-zero if any
//! fixture fails.

use std::path::PathBuf;
use std::process::ExitCode;

use audiox::parity::{Outcome, run_bundle, run_fixture};
use audiox_core::fixtures::{FixtureSet, fixtures_dir};
use burn::tensor::Device;
use clap::Parser;

/// Compare the Rust components with the golden fixtures.
#[derive(Parser)]
struct Args {
    /// Fixture set folder (with index.json); defaults to $AUDIOX_FIXTURES_DIR or the vendored set.
    #[arg(long)]
    fixtures: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.fixtures.unwrap_or_else(fixtures_dir);
    let set = match FixtureSet::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let device = Device::flex();
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let mut results: Vec<(String, Outcome)> = Vec::new();
    for name in set.names() {
        if name == "bundle" {
            results.extend(run_bundle(&set, &device));
        } else {
            let outcome = run_fixture(&set, &name, &device);
            results.push((name, outcome));
        }
    }
    for (name, outcome) in &results {
        match outcome {
            Outcome::Pass { compared } => {
                pass += 1;
                println!("PASS {name} ({compared} tensors)");
            }
            Outcome::Fail {
                worst,
                failed,
                compared,
            } => {
                fail += 1;
                println!(
                    "FAIL {name} ({failed} of {compared} tensors out of tolerance; worst {worst})"
                );
            }
            Outcome::Error(e) => {
                fail += 1;
                println!("FAIL {name} (error: {e})");
            }
            Outcome::NotImplemented => {
                skip += 1;
                println!("SKIP {name} (not implemented)");
            }
        }
    }
    println!("parity: {pass} pass, {fail} fail, {skip} not implemented");
    if fail > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
