//! Writes the timelines (`audiox_train::train::timeline`) of the first training clips of the
//! demo corpus as raw little-endian f32, `[clips, frames, CHANNELS]`, for analysis elsewhere
//! (e.g. how many dimensions the layouts of the corpus span, `docs/training.md`).
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example timeline_dump -- OUT.f32 [CLIPS] [FRAMES]
//! ```
//!
//! The corpus is the demo run's (16 kHz, 10 s, timing jitter 0.1); 4,096 clips and 500 frames
//! by default (the demo teacher's clip pool and latent frames). The clips' captions go to
//! `OUT.f32.txt`, one per line (e.g. for the spread of layouts that share a caption: the part
//! of the timeline term no caption-conditioned model can remove).

use std::io::Write;

use audiox_train::corpus::{Corpus, CorpusConfig};
use audiox_train::train::timeline::timeline;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: timeline_dump OUT.f32 [CLIPS] [FRAMES]";
    let out = args.next().ok_or(usage)?;
    let clips: u64 = args.next().map_or(Ok(4096), |v| v.parse())?;
    let frames: usize = args.next().map_or(Ok(500), |v| v.parse())?;
    if frames == 0 {
        return Err("FRAMES must be at least 1".into());
    }
    let cfg = CorpusConfig {
        sample_rate: 16_000,
        timing_jitter: 0.1,
        ..CorpusConfig::default()
    };
    let frame_s = cfg.duration_s / frames as f32;
    let corpus = Corpus::new(cfg)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let mut captions = std::io::BufWriter::new(std::fs::File::create(format!("{out}.txt"))?);
    for i in 0..clips {
        let clip = corpus.training_clip(i);
        for v in timeline(&clip.events, frames, frame_s) {
            file.write_all(&v.to_le_bytes())?;
        }
        writeln!(captions, "{}", clip.caption)?;
    }
    file.flush()?;
    captions.flush()?;
    println!("{clips} clips x {frames} frames written to {out}");
    Ok(())
}
