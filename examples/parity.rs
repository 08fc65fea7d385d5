//! The parity harness: runs every fixture of a golden fixture set through the matching Rust
//! component and compares with the reference.
//!
//! ```text
//! cargo run --release -p audiox --example parity -- --fixtures fixtures/tiny
//! cargo run --release -p audiox --features wgpu --example parity -- --fixtures fixtures/tiny --device wgpu
//! cargo run --release -p audiox --features wgpu --example parity -- --fixtures fixtures/tiny --device wgpu --precision f16
//! ```
//!
//! Prints one line per fixture (`PASS name`, `FAIL name (worst ...)`, `SKIP name (not
//! implemented)`), then `parity: P pass, F fail, S not implemented`; exits non-zero if any
//! fixture fails. In f32 every tensor is held to the fixture's tolerance; under `--precision
//! f16|bf16` to the half-precision rule (`Criterion::Half`: finite, worst error at most 5 % of
//! the reference's peak |value|), and each line names the reference peak.

use std::path::PathBuf;
use std::process::ExitCode;

use audiox::parity::{Outcome, run_bundle, run_fixture};
use audiox_core::fixtures::{Criterion, FixtureSet, fixtures_dir};
use clap::Parser;

/// Compare the Rust components with the golden fixtures.
#[derive(Parser)]
struct Args {
    /// Fixture set folder (with index.json); defaults to $AUDIOX_FIXTURES_DIR or the vendored set.
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Compute device: `cpu`, or `wgpu` / `vulkan` / `cuda` in builds with that feature of the
    /// audiox crate. Every device is held to the fixtures' f32 tolerances (docs/gpu.md).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute precision of a GPU device: `f32` (default), `f16` or `bf16`. The fixtures'
    /// tolerances are f32 ones; a half-precision run is held to the half rule instead: every
    /// value finite and the worst error at most 5 % of the reference's peak |value|.
    #[arg(long, default_value = "f32")]
    precision: String,
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
    let precision = match args.precision.parse::<audiox::Precision>() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --precision: {e}");
            return ExitCode::from(2);
        }
    };
    let device = match audiox::select_device(&args.device, precision) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let criterion = match precision {
        audiox::Precision::F32 => Criterion::Tolerance,
        audiox::Precision::F16 | audiox::Precision::Bf16 => Criterion::Half,
    };
    let started = std::time::Instant::now();
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for name in set.names() {
        // Printed as they finish: on a GPU the first use of each kernel compiles it.
        let t = std::time::Instant::now();
        let bundle = name == "bundle";
        let results: Vec<(String, Outcome)> = if bundle {
            run_bundle(&set, &device, criterion)
        } else {
            let outcome = run_fixture(&set, &name, &device, criterion);
            vec![(name, outcome)]
        };
        let seconds = t.elapsed().as_secs_f64();
        let time = if bundle {
            String::new()
        } else {
            format!(" [{seconds:.1} s]")
        };
        for (name, outcome) in &results {
            match outcome {
                Outcome::Pass { compared, closest } => {
                    pass += 1;
                    println!("PASS {name} ({compared} tensors; closest {closest}){time}");
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
        if bundle {
            println!("  ({} bundle requests in {seconds:.1} s)", results.len());
        }
    }
    println!(
        "parity: {pass} pass, {fail} fail, {skip} not implemented (device {}, {precision}, {:.1} s)",
        args.device,
        started.elapsed().as_secs_f64()
    );
    if fail > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
