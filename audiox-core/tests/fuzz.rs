//! Property tests on hostile bytes (bounded, run in CI): mutated safetensors and torch
//! checkpoints, and WAV / FLAC / MP3 / Ogg files (config JSON: `audiox/tests/config_fuzz.rs`,
//! where the model config lives). Every case must succeed or
//! return an error; a panic fails. `tests/corpus/<target>/` holds earlier finds and
//! hand-made boundary cases, replayed first. `AUDIOX_FUZZ_CASES=N` runs N cases per target.

use std::path::{Path, PathBuf};

use audiox_core::audio::Audio;
use audiox_core::fuzz::{cases, check_no_panic};
use audiox_core::limits::Limits;
use audiox_core::weights::StateDict;

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn corpus(target: &str) -> PathBuf {
    here().join("corpus").join(target)
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny")
}

/// Opens `bytes` as a weight file and reads every tensor (the reader's whole surface).
fn open_weights(dir: &Path, bytes: &[u8], name: &str) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    if let Ok(dict) = StateDict::open(&path) {
        let keys: Vec<String> = dict.keys().map(str::to_string).collect();
        for key in keys {
            let _ = dict.read_f32(&key);
        }
    }
}

fn safetensors_seed() -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let a: Vec<u8> = (0..12)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let b: Vec<u8> = (0..4u16).flat_map(|i| (i * 1000).to_le_bytes()).collect();
    let views = vec![
        (
            "a.weight",
            TensorView::new(Dtype::F32, vec![3, 4], &a).unwrap(),
        ),
        ("b.bias", TensorView::new(Dtype::F16, vec![4], &b).unwrap()),
    ];
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn mutated_safetensors_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    check_no_panic(
        "safetensors",
        corpus("safetensors"),
        &[safetensors_seed()],
        cases(400),
        1,
        |b| open_weights(dir.path(), b, "w.safetensors"),
    );
}

#[test]
fn mutated_torch_checkpoints_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    // The two small Lightning-style checkpoints of the fixture set (zip archives with a pickle).
    let seeds: Vec<Vec<u8>> = ["vae_lightning_f16.ckpt", "vae_lightning_f32.ckpt"]
        .iter()
        .map(|f| std::fs::read(fixtures().join("ckpt").join(f)).unwrap())
        .collect();
    check_no_panic("torch", corpus("torch"), &seeds, cases(150), 2, |b| {
        open_weights(dir.path(), b, "w.ckpt")
    });
}

fn wav_seed(format: u16, bits: u16, rate: u32, channels: u16, frames: usize) -> Vec<u8> {
    let audio = Audio::new(
        rate,
        (0..channels)
            .map(|c| {
                (0..frames)
                    .map(|i| ((i + c as usize) as f32 * 0.1).sin() * 0.5)
                    .collect()
            })
            .collect(),
    )
    .unwrap();
    let fmt = if format == 3 && bits == 32 {
        audiox_core::audio::WavFormat::Float32
    } else {
        audiox_core::audio::WavFormat::Pcm16
    };
    audio.to_wav_bytes(fmt).unwrap()
}

#[test]
fn mutated_audio_files_never_panic() {
    let mut seeds = vec![
        wav_seed(1, 16, 8000, 2, 200),
        wav_seed(3, 32, 11025, 1, 100),
    ];
    for f in ["tone.flac", "tone.mp3", "tone.ogg"] {
        if let Ok(b) = std::fs::read(here().join("fuzz_seeds").join(f)) {
            seeds.push(b);
        }
    }
    let limits = Limits::default();
    check_no_panic("audio", corpus("audio"), &seeds, cases(600), 6, |b| {
        for hint in [None, Some("wav"), Some("flac"), Some("mp3")] {
            if let Ok(a) = Audio::decode_bytes(b.to_vec(), hint) {
                let _ = a.check_finite("sample");
                let _ = a.peak_normalized();
                // Resampling a window is bounded for any rate the limits accept.
                if limits
                    .check_audio_format("audio", a.sample_rate(), a.num_channels())
                    .is_ok()
                {
                    let _ = a.window_at_rate(44_100, 0.0, 64);
                }
            }
            let _ = Audio::decode_bytes_window(b.to_vec(), hint, 0.01, 0.05, &limits);
        }
    });
}

#[test]
fn resampling_any_rate_has_bounded_cost() {
    // Prime and near-prime rates around common ones, and the extremes the limits accept: each
    // finishes quickly (the FFT resampler would need an FFT as large as the rate).
    let started = std::time::Instant::now();
    for rate in [44_101u32, 47_999, 383_987, 1, 7, 384_000] {
        let frames = (rate as usize / 10).max(200);
        let a = Audio::new(rate, vec![vec![0.25; frames]; 2]).unwrap();
        let b = a.resample(44_100).unwrap();
        let expected = (frames as f64 * 44_100.0 / rate as f64).round() as usize;
        assert_eq!(b.num_frames(), expected, "{rate} Hz");
        // A constant stays near constant away from the edges.
        if b.num_frames() > 2000 {
            let mid = b.channels()[0][b.num_frames() / 2];
            assert!((mid - 0.25).abs() < 0.02, "{rate} Hz: {mid}");
        }
    }
    // A bound against a pathological cost, not a benchmark: 15.6 s in CI's debug build on the
    // 2-core machine with one core free, 33 s with three processes sharing both
    // (2026-12-02), hence the margin.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
}
