//! The three conditioners: parity with the `conditioner` fixture, the full-size structure of
//! the video and audio-prompt conditioners (`mmdit.json`), the skipped work for empty video and
//! silent prompts, masking options, and bad input.

// One blanked span per item: a one-item batch has a one-range vector.
#![allow(clippy::single_range_in_vec_init)]

use audiox_core::Error;
use audiox_core::fixtures::{
    Fixture, FixtureSet, assert_all_pass, manifest_dir, official_config_json,
};
use audiox_core::noise::{NoiseSource, ReplayNoise, SeededNoise, labels};
use audiox_core::tensor::to_vec;
use audiox_core::weights::{compare_with_manifest, read_manifest};
use audiox_encoders::clip::ClipVisionConfig;
use audiox_encoders::conditioners::{
    AudioPromptConditioner, AudioPromptConfig, PromptMask, VideoConditioner, VideoConditionerConfig,
};
use audiox_encoders::parity::conditioner::{
    audio_conditioner, check_conditioner, conditioner_section, video_conditioner,
};
use burn::nn::LinearConfig;
use burn::tensor::{Device, Tensor};

fn fixture() -> Option<Fixture> {
    let set = FixtureSet::open_default().unwrap();
    if !set.contains("conditioner") {
        eprintln!("no conditioner fixture in {}; skipped", set.dir().display());
        return None;
    }
    Some(set.fixture("conditioner").unwrap())
}

fn input<const D: usize>(fx: &Fixture, name: &str) -> Tensor<D> {
    let t = fx.f32(name).unwrap();
    audiox_core::tensor::from_dyn(t.values, &t.shape, &Device::flex()).unwrap()
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn conditioners_match_the_reference() {
    let Some(fx) = fixture() else {
        return;
    };
    let checks = check_conditioner(&fx, &Device::flex()).unwrap();
    // Every mid.* and every out.* except the MAF output and its mask (MMDiT crate), plus the
    // second check of the video tokens through the skipping path.
    let stored = fx.names_with_prefix("mid.").len() + fx.names_with_prefix("out.").len();
    assert_eq!(checks.len(), stored - 2 + 1, "{checks:#?}");
    assert_all_pass("conditioner", &checks);
}

/// The video conditioner built at the official config (CLIP ViT-B/32) has the names and shapes
/// of the `conditioner.conditioners.video_prompt.*` entries of `mmdit.json` (its CLIP copy
/// included; the scalar `sync_weight` is 0-d in both).
#[test]
fn full_size_video_conditioner_matches_the_manifest() {
    // The official section; the sizes it does not hold are the config's defaults.
    let config = conditioner_section::<VideoConditionerConfig>(
        &official_config_json().unwrap(),
        VideoConditionerConfig::TYPE,
    )
    .unwrap()
    .with_clip(ClipVisionConfig::vit_b32());
    assert_eq!(
        (config.frames(), config.tokens, config.sync_rows),
        (50, 128, 240)
    );
    let video = config.init(&Device::flex());
    let manifest = read_manifest(manifest_dir().join("mmdit.json")).unwrap();
    let prefix = "conditioner.conditioners.video_prompt.";
    let manifest = manifest
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v)))
        .collect();
    let diff = compare_with_manifest(&video, &VideoConditioner::layout(), &manifest);
    assert!(diff.is_empty(), "{diff}");
}

/// The audio-prompt conditioner at the official config has the names and shapes of the
/// `conditioner.conditioners.audio_prompt.*` entries of `mmdit.json`; the private VAE's
/// decoder (stored, never used) is declared ignored.
#[test]
fn full_size_audio_conditioner_matches_the_manifest() {
    let config: AudioPromptConfig =
        conditioner_section(&official_config_json().unwrap(), AudioPromptConfig::TYPE).unwrap();
    assert_eq!(
        (config.samples, config.latent_frames, config.tokens),
        (441000, 215, 128)
    );
    let audio = config.init(&Device::flex());
    let layout = audio.layout();
    let manifest = read_manifest(manifest_dir().join("mmdit.json")).unwrap();
    let prefix = "conditioner.conditioners.audio_prompt.";
    let manifest: std::collections::BTreeMap<_, _> = manifest
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v)))
        .collect();
    let diff = compare_with_manifest(&audio, &layout, &manifest);
    assert!(diff.is_empty(), "{diff}");
    assert!(
        manifest
            .keys()
            .any(|k| k.starts_with("pretransform.model.decoder."))
    );
    assert!(layout.is_ignored("pretransform.model.decoder.layers.0.weight_v"));
}

/// Items without video give `empty_visual_feat`, and for them nothing else runs: with the
/// CLIP tower and the projection broken (they would panic if run), an all-empty batch still
/// gives the empty feature, and a mixed batch gives the reference's result.
#[test]
fn empty_video_skips_clip_and_the_temporal_transformer() {
    let Some(fx) = fixture() else {
        return;
    };
    let device = Device::flex();
    let video = video_conditioner(&fx, &device).unwrap();
    let frames = input::<5>(&fx, "in.video");
    let sync = input::<3>(&fx, "in.sync");
    let empty = VideoConditioner::empty_items(&frames);
    assert_eq!(
        empty,
        vec![false, true],
        "the fixture's item 1 has no video"
    );

    // Mixed batch: the skipping path equals the reference's computation on every item.
    let reference = video.forward_trace(frames.clone(), sync.clone()).unwrap();
    let skipping = video.forward(frames.clone(), sync.clone()).unwrap();
    assert!(max_diff(reference.condition.tokens.clone(), skipping.tokens) < 1e-6);

    // Break every stage after the emptiness test; an all-empty batch never reaches them.
    let mut broken = video;
    let d = broken.visual_encoder_model.hidden_size();
    broken.visual_encoder_model.vision_model.encoder.layers[0]
        .mlp
        .fc1 = LinearConfig::new(d + 1, 4).init(&device);
    broken.proj = LinearConfig::new(3, 2).init(&device);
    let [_, t, c, h, w] = frames.dims();
    let zeros = Tensor::<5>::zeros([3, t, c, h, w], &device);
    let [_, rows, sd] = sync.dims();
    let out = broken
        .forward(zeros, Tensor::ones([3, rows, sd], &device))
        .unwrap();
    let empty_feat = reference.condition.tokens.narrow(0, 1, 1);
    for i in 0..3 {
        assert_eq!(
            max_diff(out.tokens.clone().narrow(0, i, 1), empty_feat.clone()),
            0.0
        );
    }
    assert_eq!(to_vec(out.mask), vec![1.0; 3]);
    // A real item does run them.
    let real = frames.narrow(0, 0, 1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        broken.forward(real, sync.narrow(0, 0, 1))
    }));
    assert!(
        r.is_err(),
        "the broken CLIP tower ran and panicked for a real video"
    );
}

#[test]
fn bad_video_input_is_a_typed_error() {
    let Some(fx) = fixture() else {
        return;
    };
    let device = Device::flex();
    let video = video_conditioner(&fx, &device).unwrap();
    let frames = input::<5>(&fx, "in.video");
    let sync = input::<3>(&fx, "in.sync");
    let [b, t, c, h, w] = frames.dims();
    let [_, rows, d] = sync.dims();
    let cases: Vec<([usize; 5], [usize; 3])> = vec![
        ([b, 0, c, h, w], [b, rows, d]),     // zero frames
        ([b, t + 1, c, h, w], [b, rows, d]), // wrong frame count
        ([b, t, 1, h, w], [b, rows, d]),     // grey frames
        ([b, t, 4, h, w], [b, rows, d]),     // RGBA frames
        ([b, t, c, h + 1, w], [b, rows, d]), // wrong size
        ([0, t, c, h, w], [0, rows, d]),     // empty batch
        ([b, t, c, h, w], [b, rows - 1, d]), // wrong sync rows
        ([b, t, c, h, w], [b + 1, rows, d]), // sync batch differs
    ];
    for (fd, sd) in cases {
        let r = video.forward(Tensor::zeros(fd, &device), Tensor::zeros(sd, &device));
        assert!(
            matches!(r, Err(Error::InputShape { .. })),
            "{fd:?} {sd:?}: {r:?}"
        );
    }
}

fn seeded_draws(
    conditioner: &AudioPromptConditioner,
    audio: Tensor<3>,
    mask: &PromptMask,
) -> Vec<f32> {
    let mut noise = SeededNoise::new(5);
    to_vec(conditioner.forward(audio, mask, &mut noise).unwrap().tokens)
}

/// A request without an audio prompt does not run the VAE encoder: the silent prompt's
/// encoder output is cached, and both paths give the same tokens with the same draws.
#[test]
fn silent_prompts_use_the_cached_encoder_output() {
    let Some(fx) = fixture() else {
        return;
    };
    let device = Device::flex();
    let mut audio = audio_conditioner(&fx, &device).unwrap();
    let s = fx.f32("in.audio").unwrap().shape[2];
    let zeros = Tensor::<3>::zeros([2, 2, s], &device);

    // The uncached encoder output of silence equals the cached one used by both paths.
    let uncached = audio.moments(zeros.clone());
    let mut a = SeededNoise::new(9);
    let mut b = SeededNoise::new(9);
    let traced = audio
        .forward_trace(zeros.clone(), &PromptMask::Random, &mut a)
        .unwrap();
    assert!(max_diff(traced.moments, uncached) < 1e-6);
    let silent = audio
        .forward_silent(2, &PromptMask::Random, &mut b, &device)
        .unwrap();
    assert_eq!(
        max_diff(traced.condition.tokens.clone(), silent.tokens),
        0.0
    );
    // The same draws were consumed: the generators are in the same state.
    assert_eq!(a.normal("x", &[4]).unwrap(), b.normal("x", &[4]).unwrap());

    // Break the encoder: silent requests still work (the encoder never runs for them).
    let enc = &mut audio.model.encoder;
    let width = enc.blocks[0].down.channels_out();
    enc.blocks[0].down = audiox_vae::WeightNormConv1dConfig::new(width + 3, width, 4).init(&device);
    let again = audio
        .forward_silent(2, &PromptMask::Random, &mut SeededNoise::new(9), &device)
        .unwrap();
    assert_eq!(max_diff(traced.condition.tokens, again.tokens), 0.0);
}

#[test]
fn prompt_channels_and_explicit_masks() {
    let Some(fx) = fixture() else {
        return;
    };
    let device = Device::flex();
    let audio = audio_conditioner(&fx, &device).unwrap();
    let stereo = input::<3>(&fx, "in.audio").narrow(0, 0, 1);
    let [_, _, s] = stereo.dims();
    let left = stereo.clone().narrow(1, 0, 1);

    // Mono is repeated to stereo; extra channels are dropped.
    let dual_mono = left.clone().repeat_dim(1, 2);
    let want = seeded_draws(&audio, dual_mono, &PromptMask::Random);
    assert_eq!(
        seeded_draws(&audio, left.clone(), &PromptMask::Random),
        want
    );
    let four = Tensor::cat(vec![stereo.clone(), stereo.clone().mul_scalar(3.0)], 1);
    assert_eq!(
        seeded_draws(&audio, four, &PromptMask::Random),
        seeded_draws(&audio, stereo.clone(), &PromptMask::Random)
    );

    // An explicit span draws nothing but the VAE noise, and blanks exactly that span.
    let c = audio.model.proj_out.weight.dims()[0];
    let la = audio.latent_frames();
    let vae_noise = vec![0.5f32; c * la];
    let mut noise = ReplayNoise::new().with_normal(labels::VAE_NOISE, &[1, c, la], vae_noise);
    let span = 3..s - 4;
    let trace = audio
        .forward_trace(
            stereo.clone(),
            &PromptMask::Spans(vec![span.clone()]),
            &mut noise,
        )
        .unwrap();
    noise.finish().unwrap();
    let masked = to_vec(trace.masked_audio);
    let original = to_vec(stereo.clone());
    for ch in 0..2 {
        for i in 0..s {
            let want = if span.contains(&i) {
                0.0
            } else {
                original[ch * s + i]
            };
            assert_eq!(masked[ch * s + i], want);
        }
    }
    // Keep: nothing blanked, nothing drawn but the VAE noise.
    let mut noise =
        ReplayNoise::new().with_normal(labels::VAE_NOISE, &[1, c, la], vec![0.0; c * la]);
    let trace = audio
        .forward_trace(stereo.clone(), &PromptMask::Keep, &mut noise)
        .unwrap();
    noise.finish().unwrap();
    assert_eq!(to_vec(trace.masked_audio), original);

    // The random mode blanks 25-75 % of every item.
    let mut noise = SeededNoise::new(3);
    let trace = audio
        .forward_trace(stereo.clone(), &PromptMask::Random, &mut noise)
        .unwrap();
    let len = trace.spans[0].len();
    assert!(len >= s / 4 && len <= (3 * s).div_ceil(4), "{len} of {s}");
}

#[test]
fn bad_audio_prompts_are_refused() {
    let Some(fx) = fixture() else {
        return;
    };
    let device = Device::flex();
    let audio = audio_conditioner(&fx, &device).unwrap();
    let s = fx.f32("in.audio").unwrap().shape[2];
    let mut noise = SeededNoise::new(1);
    for dims in [[0, 2, s], [1, 0, s], [1, 2, 3], [1, 2, s * 3]] {
        let r = audio.forward(
            Tensor::zeros(dims, &device),
            &PromptMask::Random,
            &mut noise,
        );
        assert!(
            matches!(r, Err(Error::InputShape { .. })),
            "{dims:?}: {r:?}"
        );
    }
    let stereo = Tensor::<3>::zeros([1, 2, s], &device);
    for spans in [vec![], vec![0..s + 1], vec![0..1, 0..1]] {
        let r = audio.forward(
            stereo.clone(),
            &PromptMask::Spans(spans.clone()),
            &mut noise,
        );
        assert!(
            matches!(r, Err(Error::InvalidRequest(_))),
            "{spans:?}: {r:?}"
        );
    }
    let r = audio.forward_silent(0, &PromptMask::Random, &mut noise, &device);
    assert!(matches!(r, Err(Error::InvalidRequest(_))));
}

/// The conditioners can be shared across threads (a server holds one model for all requests).
#[test]
fn conditioners_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<VideoConditioner>();
    shared::<AudioPromptConditioner>();
    shared::<audiox_encoders::conditioners::TextConditioner>();
}
