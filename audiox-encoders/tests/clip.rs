//! CLIP vision tower: parity with the `clip_vision` fixture, the full-size structure, the
//! Hugging Face folder, and bad input.

use audiox_core::Error;
use audiox_core::fixtures::{FixtureSet, assert_all_pass, manifest_dir};
use audiox_core::tensor::to_vec;
use audiox_core::weights::{
    Component, StateDict, WeightSource, compare_with_manifest, read_manifest,
};
use audiox_encoders::clip::{ClipVision, ClipVisionConfig, normalize_pixels};
use audiox_encoders::parity::vision::check_clip_vision;
use burn::tensor::{Device, Tensor, TensorData};

#[test]
fn clip_vision_matches_the_reference() {
    let set = FixtureSet::open_default().unwrap();
    if !set.contains("clip_vision") {
        eprintln!("no clip_vision fixture in {}; skipped", set.dir().display());
        return;
    }
    let fx = set.fixture("clip_vision").unwrap();
    let checks = check_clip_vision(&fx, &Device::flex()).unwrap();
    let stored = fx.names_with_prefix("mid.").len() + fx.names_with_prefix("out.").len();
    assert_eq!(
        checks.len(),
        stored,
        "compared {} of {stored} tensors",
        checks.len()
    );
    assert_all_pass("clip_vision", &checks);
}

/// ViT-B/32 has exactly the names and shapes of `clip_vit_b32.json`. Nothing is allocated.
#[test]
fn full_size_clip_matches_the_manifest() {
    let clip = ClipVisionConfig::vit_b32().init(&Device::flex());
    let manifest = read_manifest(manifest_dir().join("clip_vit_b32.json")).unwrap();
    let diff = compare_with_manifest(&clip, &ClipVision::layout(), &manifest);
    assert!(diff.is_empty(), "{diff}");
    assert_eq!(clip.tokens(), 50);
    assert_eq!(clip.image_size(), 224);
}

/// The bundle's Hugging Face folder (a full `CLIPModel` config with `vision_config`) loads,
/// and its sizes follow the config.
#[test]
fn hugging_face_folder_loads() {
    let set = FixtureSet::open_default().unwrap();
    let dir = set.bundle_dir().join("clip-vit-base-patch32");
    if !dir.exists() {
        return;
    }
    let config = ClipVisionConfig::from_hf_file(dir.join("config.json")).unwrap();
    let weights = StateDict::open(audiox_encoders::hf_weights_file(&dir, "CLIP").unwrap()).unwrap();
    let (clip, report) =
        ClipVision::load(&config, &[WeightSource::new(&weights)], &Device::flex()).unwrap();
    assert_eq!(clip.hidden_size(), config.hidden_size);
    assert_eq!(clip.image_size(), config.image_size);
    assert_eq!(report.missing.len(), 0);
    // A vision-only config parses too.
    let vision_only = ClipVisionConfig::from_hf_json(&serde_json::json!({
        "hidden_size": 64, "num_attention_heads": 4, "image_size": 64, "patch_size": 16
    }))
    .unwrap();
    assert_eq!(vision_only.tokens(), 17);
    assert_eq!(vision_only.intermediate_size, 3072);
}

#[test]
fn pixel_normalisation() {
    let device = Device::flex();
    let frames = Tensor::<4>::from_data(
        TensorData::new(vec![0f32, 255., 127.5, 0., 255., 51.], [1, 3, 1, 2]),
        &device,
    );
    let got = to_vec(normalize_pixels(frames));
    let want = [
        (0.0 - 0.481_454_66) / 0.268_629_54,
        (1.0 - 0.481_454_66) / 0.268_629_54,
        (0.5 - 0.457_827_5) / 0.261_302_6,
        (0.0 - 0.457_827_5) / 0.261_302_6,
        (1.0 - 0.408_210_73) / 0.275_777_1,
        (0.2 - 0.408_210_73) / 0.275_777_1,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{g} vs {w}");
    }
}

#[test]
fn frames_of_the_wrong_size_or_channels_are_refused() {
    let device = Device::flex();
    let config = ClipVisionConfig::new(16, 32, 8, 1, 2, 32, 16);
    let clip = config.init(&device);
    for dims in [
        [1, 3, 32, 31],
        [1, 1, 32, 32],
        [1, 4, 32, 32],
        [0, 3, 32, 32],
        [2, 3, 64, 64],
    ] {
        let r = clip.forward(Tensor::zeros(dims, &device));
        assert!(
            matches!(r, Err(Error::InputShape { .. })),
            "{dims:?}: {r:?}"
        );
    }
    assert!(clip.forward(Tensor::zeros([2, 3, 32, 32], &device)).is_ok());
    // Inconsistent configs are refused.
    let bad =
        ClipVisionConfig::from_hf_json(&serde_json::json!({"image_size": 100, "patch_size": 32}));
    assert!(matches!(bad, Err(Error::Config { .. })));
    let gelu = ClipVisionConfig::from_hf_json(&serde_json::json!({"hidden_act": "gelu"}));
    assert!(matches!(gelu, Err(Error::Config { .. })));
}
