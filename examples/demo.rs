//! The embedded demo model: loads it from the binary (no files, no network) and generates one
//! clip per caption.
//!
//! ```text
//! cargo run --release -p audiox --example demo
//! cargo run --release -p audiox --example demo -- "two knocks, then a low thud" knocks.wav
//! ```
//!
//! The demo model is a small AudioX trained by the project (`audiox-train`) on procedural sound
//! events -- not AudioX-Turbo. A build without its files (`audiox-demo/assets/`, see its
//! README) gets `Error::DemoModelMissing`, whose message says how to produce them; this
//! program prints it and exits with status 2.

use std::process::ExitCode;

use audiox::{AudioX, Error, Request};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let caption = args
        .next()
        .unwrap_or_else(|| "three high beeps".to_string());
    let out = args.next().unwrap_or_else(|| "demo.wav".to_string());
    match run(&caption, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::DemoModelMissing { .. }) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(caption: &str, out: &str) -> audiox::Result<()> {
    let model = AudioX::demo()?;
    eprintln!(
        "the demo model (trained by this project, not AudioX-Turbo): {} Hz, up to {} s",
        model.sample_rate(),
        model.max_duration()
    );
    let generation = model.generate(Request::text(caption).seed(1))?;
    generation.audio[0].write_wav(out)?;
    println!(
        "\"{caption}\" -> {out} ({:.2} s; {})",
        generation.audio[0].duration_secs(),
        generation.timings
    );
    Ok(())
}
