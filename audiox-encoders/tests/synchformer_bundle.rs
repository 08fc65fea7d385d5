//! The whole video path of the bundle's `text_video` request, as a user runs it: the synthetic
//! clip's decoded frames -> CLIP and Synchformer streams -> Synchformer loaded from the bundle's
//! `synchformer_state_dict.pth` (a torch checkpoint) -> sync features. Sizes come from the
//! bundle's `config.json`: the CLIP stream's `video_fps` and the small Synchformer's sizes
//! (`_tiny_hardcoded_sizes`, the only place a config gives them).

use audiox_core::fixtures::{Check, Fixture, FixtureSet, assert_all_pass, config_file_section};
use audiox_core::tensor::to_vec;
use audiox_core::weights::{Component, StateDict, WeightSource};
use audiox_encoders::frames::{FrameSampling, Pixels, SampledFrames, VideoFrames};
use audiox_encoders::synchformer::{Synchformer, SynchformerConfig, WEIGHT_PREFIX};
use burn::tensor::Device;

fn frames_check(fx: &Fixture, index: &str, pixels: &str, frames: &SampledFrames) -> Vec<Check> {
    let want_index = fx.i64(index).unwrap();
    let want_index: Vec<f32> = want_index.values.iter().map(|&v| v as f32).collect();
    let got_index: Vec<f32> = frames.source_index().iter().map(|&v| v as f32).collect();
    let want = fx.i64(pixels).unwrap();
    let want_px: Vec<f32> = want.values.iter().map(|&v| v as f32).collect();
    let Pixels::U8(got) = frames.pixels() else {
        panic!("video frames are u8")
    };
    let got_px: Vec<f32> = got.iter().map(|&v| v as f32).collect();
    vec![
        Check::compare(
            index,
            &[want_index.len()],
            &want_index,
            &[got_index.len()],
            &got_index,
            0.0,
            0.0,
        ),
        Check::compare(
            pixels,
            &want.shape,
            &want_px,
            &frames.shape(),
            &got_px,
            1.0,
            0.0,
        ),
    ]
}

#[test]
fn bundle_video_request_gives_the_reference_sync_features() {
    let set = FixtureSet::open_default().unwrap();
    let bundle = set.bundle_dir();
    let expected_dir = bundle.join("expected");
    if !expected_dir.join("text_video.json").exists() {
        eprintln!(
            "fixture set {} has no bundle text_video request; skipped",
            set.dir().display()
        );
        return;
    }
    let fx = Fixture::open(&expected_dir, "text_video").unwrap();
    let config = bundle.join("config.json");
    let sizes: SynchformerConfig =
        config_file_section(&config, "/_tiny_hardcoded_sizes/synchformer/0").unwrap();
    let video_fps: u32 = config_file_section(&config, "video_fps").unwrap();
    let request = fx.field("request").unwrap();
    let video_request = &request["video"];
    let declared_fps = video_request["declared_fps"].as_f64().unwrap();
    let resize_to = video_request["resize_to"].as_u64().unwrap() as usize;
    let seconds = request["seconds_total"].as_f64().unwrap();
    let start = request["seconds_start"].as_f64().unwrap_or(0.0);

    let source = fx.i64("in.video_source").unwrap();
    let shape: [usize; 4] = source.shape.clone().try_into().unwrap();
    let pixels: Vec<u8> = source.values.iter().map(|&v| v as u8).collect();
    let video = VideoFrames::new(pixels, shape, declared_fps).unwrap();
    let clip = FrameSampling::new(video_fps as f64, seconds, resize_to).with_seek(start);
    let sync =
        FrameSampling::new(sizes.frame_rate as f64, seconds, sizes.image_size).with_seek(start);
    let [clip_frames, sync_frames] = video.sample_streams([clip, sync]).unwrap();

    let mut checks = frames_check(&fx, "mid.clip_frame_index", "mid.clip_frames", &clip_frames);
    checks.extend(frames_check(
        &fx,
        "mid.sync_frame_index",
        "mid.sync_frames_u8",
        &sync_frames,
    ));

    let device = Device::flex();
    let dict = StateDict::open(bundle.join("synchformer/synchformer_state_dict.pth")).unwrap();
    let (model, report) = Synchformer::load(
        &sizes,
        &[WeightSource::with_prefix(&dict, WEIGHT_PREFIX)],
        &device,
    )
    .unwrap();
    // Every `vfeat_extractor.*` tensor is used (the reference loads them strictly); the file's
    // other entries (`afeat_extractor.*`, ...) are not ours to read.
    assert!(report.unused.is_empty(), "{:?}", report.unused);

    let features = model.forward(sync_frames.sync_tensor(&device)).unwrap();
    // The rows are checked against the reference's features below.
    assert_eq!(features.dims()[2], sizes.embed_dim);
    checks.push(
        fx.check("out.sync_features", &features.dims(), &to_vec(features))
            .unwrap(),
    );
    for c in &checks {
        println!("{c}");
    }
    assert_all_pass("bundle text_video video path", &checks);
}
