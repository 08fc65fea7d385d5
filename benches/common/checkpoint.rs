//! The full-size random-weight checkpoint the end-to-end benches load through the public API:
//! every official name and shape (`fixtures/manifest/*.json`), f32 safetensors, about 12 GB,
//! written once and reused while its `complete` marker is there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use audiox::AudioXBuilder;
use audiox_core::fixtures::{fixtures_dir, manifest_dir, official_config_path};
use rayon::prelude::*;

/// Error type of the bench helpers.
pub type BenchError = Box<dyn std::error::Error>;

/// Environment variable naming the checkpoint folder (default
/// `target/audiox-random-checkpoint`, shared by every bench that uses it).
pub const CHECKPOINT_ENV: &str = "AUDIOX_BENCH_CHECKPOINT";

/// Where the random checkpoint lives (`AUDIOX_BENCH_CHECKPOINT`, else
/// `target/audiox-random-checkpoint` in the workspace).
pub fn checkpoint_dir() -> PathBuf {
    std::env::var_os(CHECKPOINT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            audiox_core::fixtures::repo_root()
                .join("target")
                .join("audiox-random-checkpoint")
        })
}

/// A builder for the checkpoint in `dir` (every file named, as a user with loose files would).
pub fn builder(dir: &Path) -> AudioXBuilder {
    audiox::AudioX::builder()
        .config(dir.join("config.json"))
        .student_checkpoint(dir.join("audiox_turbo.safetensors"))
        .vae_checkpoint(dir.join("vae.safetensors"))
        .t5_dir(dir.join("t5-base"))
        .clip_dir(dir.join("clip-vit-base-patch32"))
}

/// Writes the official-size random checkpoint into `dir` unless its marker says its weights
/// are complete (the small configuration files are rewritten every time). Returns whether
/// weights were written.
pub fn write_random_checkpoint(dir: &Path) -> Result<bool, BenchError> {
    std::fs::create_dir_all(dir.join("t5-base"))?;
    std::fs::create_dir_all(dir.join("clip-vit-base-patch32"))?;
    write_configs(dir)?;
    let marker = dir.join("complete");
    if marker.exists() {
        return Ok(false);
    }
    let manifests = manifest_dir();
    // The whole student wrapper (DiT, MAF, conditioners with their CLIP and VAE copies, VAE).
    write_random_safetensors(
        &read_manifest(&manifests.join("mmdit.json"))?,
        &dir.join("audiox_turbo.safetensors"),
    )?;
    write_random_safetensors(
        &read_manifest(&manifests.join("vae.json"))?,
        &dir.join("vae.safetensors"),
    )?;
    write_random_safetensors(
        &read_manifest(&manifests.join("t5_base.json"))?,
        &dir.join("t5-base").join("model.safetensors"),
    )?;
    write_random_safetensors(
        &read_manifest(&manifests.join("clip_vit_b32.json"))?,
        &dir.join("clip-vit-base-patch32").join("model.safetensors"),
    )?;
    std::fs::write(&marker, "random weights, seeded by tensor name\n")?;
    Ok(true)
}

/// The model config and the HF folder configs of a full-size checkpoint directory.
fn write_configs(dir: &Path) -> Result<(), BenchError> {
    // Configurations: the official model config and the public t5-base / CLIP B/32 sizes on
    // top of the tiny bundle's files (same fields, tiny values).
    std::fs::copy(official_config_path(), dir.join("config.json"))?;
    let bundle = fixtures_dir().join("bundle");
    std::fs::copy(
        bundle.join("t5-base").join("tokenizer.json"),
        dir.join("t5-base").join("tokenizer.json"),
    )?;
    let mut t5: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        bundle.join("t5-base").join("config.json"),
    )?)?;
    for (key, value) in [
        ("d_model", 768),
        ("d_kv", 64),
        ("d_ff", 3072),
        ("num_heads", 12),
        ("num_layers", 12),
        ("num_decoder_layers", 12),
        ("vocab_size", 32128),
    ] {
        t5[key] = value.into();
    }
    std::fs::write(
        dir.join("t5-base").join("config.json"),
        serde_json::to_string_pretty(&t5)?,
    )?;
    let mut clip: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        bundle.join("clip-vit-base-patch32").join("config.json"),
    )?)?;
    for (key, value) in [
        ("hidden_size", 768),
        ("intermediate_size", 3072),
        ("num_attention_heads", 12),
        ("num_hidden_layers", 12),
        ("image_size", 224),
        ("patch_size", 32),
        ("projection_dim", 512),
    ] {
        clip["vision_config"][key] = value.into();
    }
    clip["projection_dim"] = 512.into();
    std::fs::write(
        dir.join("clip-vit-base-patch32").join("config.json"),
        serde_json::to_string_pretty(&clip)?,
    )?;
    Ok(())
}

/// `name -> shape` from a manifest (`{name: [[shape], dtype]}`), in file order.
fn read_manifest(path: &Path) -> Result<Vec<(String, Vec<usize>)>, BenchError> {
    let text = std::fs::read_to_string(path)?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)?;
    let mut out = Vec::with_capacity(map.len());
    for (name, entry) in map {
        let shape: Vec<usize> = serde_json::from_value(entry[0].clone())?;
        out.push((name, shape));
    }
    Ok(out)
}

/// Streams an f32 safetensors file tensor by tensor (never more than one tensor in memory),
/// with uniform values in `+-1/sqrt(fan_in)` (`fan_in` = elements / first dimension) drawn
/// from a counter-based generator keyed by the tensor name.
fn write_random_safetensors(
    tensors: &[(String, Vec<usize>)],
    path: &Path,
) -> Result<(), BenchError> {
    let mut header = BTreeMap::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = 4 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_string(&header)?.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut file = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(path)?);
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(&header)?;
    // Data in the offsets' order, which is the header's (sorted) key order.
    let by_name: BTreeMap<&String, &Vec<usize>> = tensors.iter().map(|(n, s)| (n, s)).collect();
    for (name, shape) in by_name {
        let n: usize = shape.iter().product();
        let fan_in = (n / shape.first().copied().unwrap_or(1).max(1)).max(1);
        let scale = 1.0 / (fan_in as f32).sqrt();
        let key = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let mut bytes = vec![0u8; 4 * n];
        bytes
            .par_chunks_mut(4 << 16)
            .enumerate()
            .for_each(|(chunk, out)| {
                for (i, v) in out.chunks_exact_mut(4).enumerate() {
                    let x = splitmix64(key ^ ((chunk << 16) + i) as u64);
                    let u = (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                    v.copy_from_slice(&(u * scale).to_le_bytes());
                }
            });
        file.write_all(&bytes)?;
    }
    file.flush()?;
    Ok(())
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
