//! Parameter counts and bf16 sizes of a model folder written by `audiox-train` (its
//! `export/`), per component, as a markdown table: what the shipped demo model weighs.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example export_sizes -- runs/demo/export
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Component of an official tensor name in a file of the folder.
fn component(file: &str, name: &str) -> &'static str {
    match file {
        "pretransform/vae.safetensors" => "VAE (encoder + decoder; the prompt VAE shares it)",
        "t5-base/model.safetensors" => "T5 encoder",
        "clip-vit-base-patch32/model.safetensors" => "CLIP vision (never run: no video)",
        "synchformer/synchformer_state_dict.safetensors" => "Synchformer",
        _ if name.starts_with("model.model.") => "DiT",
        _ if name.starts_with("maf_block.") => "MAF block",
        _ if name.starts_with("conditioner.conditioners.video_prompt.") => {
            "video conditioner (empty feature, temporal, projections)"
        }
        _ if name.starts_with("conditioner.conditioners.audio_prompt.") => {
            "audio-prompt projections"
        }
        _ => "other",
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: export_sizes EXPORT_DIR")?;
    let files = [
        "pretrained_ckpt/pretrained_ckpt.safetensors",
        "audiox_turbo/audiox_turbo.safetensors",
        "pretransform/vae.safetensors",
        "t5-base/model.safetensors",
        "clip-vit-base-patch32/model.safetensors",
        "synchformer/synchformer_state_dict.safetensors",
    ];
    let mut rows: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    for file in files {
        let path: PathBuf = Path::new(&dir).join(file);
        if !path.exists() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for (name, view) in tensors.tensors() {
            let n: usize = view.shape().iter().product();
            *rows
                .entry((file.to_string(), component(file, &name)))
                .or_default() += n;
        }
    }
    println!("| file | component | parameters | bf16 |");
    println!("|---|---|---|---|");
    let mut total = 0;
    for ((file, comp), n) in &rows {
        total += n;
        println!(
            "| `{file}` | {comp} | {n} | {:.2} MB |",
            *n as f64 * 2.0 / 1e6
        );
    }
    println!(
        "| | **total** | **{total}** | **{:.2} MB** |",
        total as f64 * 2.0 / 1e6
    );
    Ok(())
}
