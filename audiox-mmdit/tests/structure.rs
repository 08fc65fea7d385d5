//! The DiT and the MAF block built at the official full-size config have exactly the names and
//! shapes of the `model.model.*` and `maf_block.*` entries of the parameter manifest. burn's
//! parameters are lazy, so the 2.2 B parameters are never allocated (checked via peak RSS).

use std::collections::BTreeMap;

use audiox_core::fixtures::{manifest_dir, official_config_section};
use audiox_core::weights::{compare_with_manifest, read_manifest};
use audiox_mmdit::parity::{DIT_SECTION, MAF_SECTION};
use audiox_mmdit::{Dit, DitConfig, MafBlock, MafBlockConfig};
use burn::tensor::Device;

fn manifest_under(prefix: &str) -> BTreeMap<String, Vec<usize>> {
    read_manifest(manifest_dir().join("mmdit.json"))
        .unwrap()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v)))
        .collect()
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

#[test]
fn full_size_models_match_the_manifest_without_allocating() {
    let device = Device::flex();
    // The official sections; the sizes they do not hold are the components' defaults.
    let dit_config: DitConfig = official_config_section(DIT_SECTION).unwrap();
    dit_config.validate(DIT_SECTION).unwrap();
    assert_eq!(
        (
            dit_config.heads(),
            dit_config.context_tokens,
            dit_config.seq_len(),
            dit_config.ffn_hidden()
        ),
        (64, 384, 237, 4096)
    );
    let dit = dit_config.init(&device).unwrap();
    let manifest = manifest_under("model.model.");
    assert_eq!(manifest.len(), 281);
    let diff = compare_with_manifest(&dit, &Dit::layout(), &manifest);
    assert!(diff.is_empty(), "DiT vs manifest:\n{diff}");

    let maf_config: MafBlockConfig = official_config_section(MAF_SECTION).unwrap();
    maf_config.validate(MAF_SECTION).unwrap();
    let maf = maf_config.init(&device);
    let manifest = manifest_under("maf_block.");
    assert_eq!(manifest.len(), 116);
    // Every name and shape, the scalar bypass gates (`[]`) included.
    let diff = compare_with_manifest(&maf, &MafBlock::layout(), &manifest);
    assert!(diff.is_empty(), "MAF vs manifest:\n{diff}");
    assert_eq!(maf.official_names(), manifest);

    // 2.2 B f32 parameters would be ~9 GB.
    if let Some(peak) = peak_rss_bytes() {
        assert!(
            peak < 1 << 30,
            "peak RSS {peak} bytes: parameters were materialised"
        );
    }
}
