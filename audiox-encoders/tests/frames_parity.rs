//! Frame selection and pre-processing against the golden fixture `video_frames`.

use audiox_core::fixtures::{FixtureSet, assert_all_pass};
use audiox_encoders::parity::frames::{check_video_frames, frame_cases};
use burn::tensor::Device;

#[test]
fn video_frames_match_the_reference() {
    let set = FixtureSet::open_default().unwrap();
    if !set.contains("video_frames") {
        eprintln!(
            "fixture set {} has no video_frames; skipped",
            set.dir().display()
        );
        return;
    }
    let fx = set.fixture("video_frames").unwrap();
    let checks = check_video_frames(&fx, &Device::flex()).unwrap();
    for c in &checks {
        println!("{c}");
    }
    // Every stored tensor is compared except those of cases this crate refuses on purpose
    // (the reference's `duration = -1`, see `FrameCase::reachable`).
    let unreachable: Vec<String> = frame_cases(&fx)
        .unwrap()
        .into_iter()
        .filter(|c| !c.reachable())
        .map(|c| format!(".{}.", c.name))
        .collect();
    let stored = fx
        .names_with_prefix("mid.")
        .into_iter()
        .chain(fx.names_with_prefix("out."))
        .filter(|n| !unreachable.iter().any(|u| n.contains(u.as_str())))
        .count();
    assert_eq!(
        checks.len(),
        stored,
        "compared {} of {stored} tensors",
        checks.len()
    );
    assert_all_pass("video_frames", &checks);
}
