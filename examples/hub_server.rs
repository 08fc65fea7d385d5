//! A local stand-in for the Hugging Face Hub on 127.0.0.1, serving the tiny bundle under the
//! three official repository names (`HKUSTAudio/AudioX-Turbo`, `google-t5/t5-base`,
//! `openai/clip-vit-base-patch32`), to try the download path without the internet. It is the
//! server the download tests use (`audiox/tests/common/hub_server.rs`).
//!
//! ```text
//! cargo run --release --example hub_server -- --seconds 300 &    # prints HF_ENDPOINT=...
//! HF_ENDPOINT=http://127.0.0.1:PORT HF_HOME=/tmp/hf cargo run --release --example generate -- \
//!     --model HKUSTAudio/AudioX-Turbo --prompt rain --seed 7 --out hub.wav
//! ```

#[path = "../audiox/tests/common/hub_server.rs"]
mod hub_server;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Serves a bundle folder as the three repositories of the official model.
#[derive(Parser, Debug)]
struct Args {
    /// The folder (default: the tiny bundle of the repository).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
}

fn main() {
    let args = Args::parse();
    let bundle = args.bundle.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny/bundle")
    });
    if !bundle.is_dir() {
        eprintln!("error: {} is not a folder", bundle.display());
        std::process::exit(1);
    }
    let server = hub_server::HubServer::start(
        hub_server::bundle_repos(&bundle),
        Duration::from_secs(args.seconds),
    );
    println!("HF_ENDPOINT={}", server.endpoint());
    std::thread::sleep(Duration::from_secs(args.seconds));
    server.stop();
}
