//! Long-form streaming holds one window, whatever the duration: peak resident memory (Linux
//! `VmHWM`) after streaming 60 s and 600 s on the tiny model. A test binary of its own, so no
//! other test shares the process's high-water mark. Prints the figures (`--nocapture`).

use audiox::{AudioX, LongFormOptions, Request};
use audiox_core::fixtures::FixtureSet;

/// Peak resident set size of this process in KiB (`None` off Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Streams `seconds` of audio, checking that at most one window is held, and returns the
/// number of samples streamed.
fn stream(model: &AudioX, seconds: f64) -> usize {
    let window = (model.max_duration() * model.sample_rate() as f64).round() as usize;
    let mut stream = model
        .stream(
            Request::text("rain on a tin roof")
                .duration(seconds)
                .seed(1),
            LongFormOptions::default(),
        )
        .unwrap();
    let mut frames = 0;
    while let Some(span) = stream.next() {
        let span = span.unwrap();
        assert!(
            span.audio.num_frames() <= window,
            "a span is at most a window"
        );
        assert!(
            stream.held_frames() <= window,
            "the stream holds at most a window"
        );
        frames += span.audio.num_frames();
    }
    frames
}

#[test]
fn peak_memory_does_not_grow_with_the_duration() {
    let set = FixtureSet::open_default().unwrap();
    let model = AudioX::builder()
        .checkpoint_dir(set.bundle_dir())
        .build()
        .unwrap();
    let rate = model.sample_rate() as f64;
    let short = 6.0 * model.max_duration();
    let long = 60.0 * model.max_duration();
    assert_eq!(stream(&model, short), (short * rate).round() as usize);
    let after_short = peak_rss_kib();
    assert_eq!(stream(&model, long), (long * rate).round() as usize);
    let after_long = peak_rss_kib();
    if let (Some(a), Some(b)) = (after_short, after_long) {
        eprintln!(
            "peak resident: {a} KiB after streaming {short} s, {b} KiB after {long} s \
             (+{} KiB)",
            b - a
        );
        // Ten times the duration may not raise the peak by more than a quarter.
        assert!(b - a <= a / 4, "peak grew from {a} KiB to {b} KiB");
    }
}
