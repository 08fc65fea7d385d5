//! Renders clips of the procedural corpus to WAV files with an index of captions and events,
//! and prints the instruction-following metric of the detector on them (the metric's ceiling).
//!
//! ```text
//! cargo run --release -p audiox-train --example render_corpus -- OUT_DIR [COUNT] [--held-out]
//! ```

use audiox_train::corpus::{Corpus, CorpusConfig};
use audiox_train::metric::{DetectorConfig, Report, detect_events, score_clip};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        return Err("usage: render_corpus OUT_DIR [COUNT] [--held-out]".into());
    };
    let count: usize = match args.get(1).filter(|a| !a.starts_with("--")) {
        Some(n) => n.parse().map_err(|e| format!("COUNT {n:?}: {e}"))?,
        None => 20,
    };
    let held_out = args.iter().any(|a| a == "--held-out");
    std::fs::create_dir_all(out)?;
    let corpus = Corpus::new(CorpusConfig::default())?;
    let clips: Vec<_> = if held_out {
        let scenes = corpus.held_out_scenes(count);
        scenes
            .iter()
            .enumerate()
            .map(|(i, s)| corpus.held_out_clip(s, i as u64))
            .collect()
    } else {
        (0..count as u64).map(|i| corpus.training_clip(i)).collect()
    };
    let cfg = DetectorConfig::default();
    let mut index = Vec::new();
    let mut scores = Vec::new();
    for (i, clip) in clips.iter().enumerate() {
        let name = format!("{i:05}.wav");
        clip.write_wav(std::path::Path::new(out).join(&name))?;
        let found = detect_events(&clip.samples, clip.sample_rate, &cfg);
        scores.push(score_clip(&clip.scene, &found, &cfg));
        index.push(
            serde_json::json!({ "file": name, "caption": clip.caption, "events": clip.events }),
        );
        println!("{name}: {}", clip.caption);
    }
    std::fs::write(
        std::path::Path::new(out).join("index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    println!("| clips | n | count | order | onset | pitch |\n|---|---|---|---|---|---|");
    println!(
        "{}",
        Report::from_scores(&scores).markdown_row("rendered (ceiling)")
    );
    Ok(())
}
