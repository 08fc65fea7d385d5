//! Asynchronous jobs and output options on the tiny model of the fixture set (issue 18).

use std::sync::OnceLock;
use std::time::Duration;

use audiox::jobs::{JobQueue, JobStage};
use audiox::postprocess::{OutputOptions, loudness_lufs};
use audiox::{Audio, AudioX, Error, Request};
use audiox_core::fixtures::FixtureSet;

fn model() -> &'static AudioX {
    static MODEL: OnceLock<AudioX> = OnceLock::new();
    MODEL.get_or_init(|| {
        let set = FixtureSet::open_default().unwrap();
        AudioX::builder()
            .checkpoint_dir(set.bundle_dir())
            .build()
            .unwrap()
    })
}

fn samples(audio: &Audio) -> Vec<f32> {
    audio.channels().iter().flatten().copied().collect()
}

#[test]
fn job_results_equal_the_blocking_call_and_progress_is_monotone() {
    let m = model();
    let request = || {
        Request::text("glass shatters")
            .seed(11)
            .steps(4)
            .num_samples(2)
    };
    let blocking = m.generate(request()).unwrap();
    let queue = JobQueue::new(m.clone(), 1).unwrap();
    let job = queue.submit(request());
    let mut seen = vec![job.progress()];
    while !job.wait_timeout(Duration::from_millis(2)) {
        seen.push(job.progress());
    }
    seen.push(job.progress());
    for pair in seen.windows(2) {
        assert!(
            pair[1].fraction >= pair[0].fraction && pair[1].step >= pair[0].step,
            "progress went backwards: {pair:?}"
        );
    }
    let last = seen.last().unwrap();
    assert_eq!(last.stage, JobStage::Done);
    assert_eq!(last.fraction, 1.0);
    assert_eq!((last.step, last.total_steps), (4, 4));
    let out = job.take().unwrap().unwrap();
    assert!(job.take().is_none(), "a result is taken once");
    assert_eq!(out.seed, Some(11));
    assert_eq!(out.audio.len(), blocking.audio.len());
    for (a, b) in out.audio.iter().zip(&blocking.audio) {
        assert_eq!(
            samples(a),
            samples(b),
            "same seed, same bits as the blocking call"
        );
    }
}

#[test]
fn several_queued_jobs_run_in_order_and_a_cancelled_one_gives_no_audio() {
    let m = model();
    let queue = JobQueue::new(m.clone(), 1).unwrap();
    // One worker: the second job waits while the first runs, and is cancelled before it
    // starts; the third still runs.
    let first = queue.submit(Request::text("a").seed(1));
    let second = queue.submit(Request::text("b").seed(2));
    let third = queue.submit(Request::text("c").seed(3));
    second.cancel();
    assert!(first.clone().join().is_ok());
    assert!(matches!(second.join(), Err(Error::Cancelled { .. })));
    let third_out = third.join().unwrap();
    assert_eq!(
        samples(&third_out.audio[0]),
        samples(&m.generate(Request::text("c").seed(3)).unwrap().audio[0])
    );
    assert!(first.is_taken());

    // Cancelling a running job: its result is Cancelled whatever stage it was in.
    let running = queue.submit(Request::text("d").seed(4).steps(8));
    while running.progress().stage == JobStage::Queued {
        std::thread::sleep(Duration::from_millis(1));
    }
    running.cancel();
    running.wait();
    assert_eq!(running.progress().stage, JobStage::Cancelled);
    assert!(matches!(running.take(), Some(Err(Error::Cancelled { .. }))));
}

#[test]
fn a_bad_request_fails_its_job_only() {
    let m = model();
    let queue = JobQueue::new(m.clone(), 2).unwrap();
    let bad = queue.submit(Request::text("x").duration(-1.0));
    let good = queue.submit(Request::text("x").seed(1));
    assert!(matches!(
        bad.clone().join(),
        Err(Error::InvalidRequest(_) | Error::OutOfRange { .. })
    ));
    assert_eq!(bad.progress().stage, JobStage::Failed);
    good.join().unwrap();
    assert_eq!(queue.workers(), 2);
}

#[test]
fn output_options_apply_to_every_variation() {
    let m = model();
    let out = m
        .generate(
            Request::text("an explosion").seed(5).num_samples(2).output(
                OutputOptions::new()
                    .sample_rate(48_000)
                    .mono(true)
                    .loudness(-20.0),
            ),
        )
        .unwrap();
    assert_eq!(out.audio.len(), 2);
    let frames = (m.max_duration() * 48_000.0).round() as usize;
    for a in &out.audio {
        assert_eq!(a.sample_rate(), 48_000);
        assert_eq!(a.num_channels(), 1);
        assert_eq!(a.num_frames(), frames);
        let l = loudness_lufs(a).unwrap().unwrap();
        assert!((l + 20.0).abs() < 0.5, "loudness {l}");
    }
    // Bad options are refused before any compute.
    assert!(matches!(
        m.generate(Request::text("x").output(OutputOptions::new().sample_rate(5))),
        Err(Error::InvalidRequest(_))
    ));
}
