//! Long-form generation on the tiny model: lengths, seams, determinism, video windows,
//! progress, cancellation, streamed WAV output and a muxed whole-video soundtrack. Every size
//! comes from the model's config.

use std::sync::{Arc, Mutex, OnceLock};

use audiox::long_form::{window_frames, window_seed};
use audiox::{
    Audio, AudioX, CancelToken, Error, LongFormOptions, Request, StepControl, VideoFrames,
    WavFormat, WavStream,
};
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

/// Window, overlap and crossfade in samples for the default options.
fn default_layout(m: &AudioX) -> (usize, usize, usize) {
    let window = (m.max_duration() * m.sample_rate() as f64).round() as usize;
    let overlap =
        ((window as f64 * audiox::long_form::DEFAULT_OVERLAP_SHARE).round() as usize).max(1);
    (window, overlap, overlap)
}

fn max_step(x: &[f32]) -> f32 {
    x.windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max)
}

#[test]
fn sixty_seconds_has_its_length_and_smooth_seams() {
    let m = model();
    let seconds = 6.0 * m.max_duration();
    let out = m
        .generate(
            Request::text("rain on a tin roof")
                .duration(seconds)
                .seed(3),
        )
        .unwrap();
    let audio = &out.audio[0];
    let rate = m.sample_rate() as f64;
    assert_eq!(audio.num_frames(), (seconds * rate).round() as usize);
    assert!((audio.duration_secs() - seconds).abs() < 0.5 / rate);
    assert!(audio.peak() <= 1.0);

    let (window, overlap, crossfade) = default_layout(m);
    let hop = window - overlap;
    let mut seams = 0;
    for k in 1.. {
        // The crossfade of window k: the end of its overlap with window k - 1.
        let fade_end = k * hop + overlap;
        let fade_start = fade_end - crossfade;
        if fade_end + hop > audio.num_frames() {
            break;
        }
        seams += 1;
        for ch in audio.channels() {
            // The signal's own sample-to-sample changes in the two windows that meet there
            // (outside the crossfade)...
            let before = max_step(&ch[fade_start - hop..fade_start]);
            let after = max_step(&ch[fade_end..fade_end + hop]);
            // ...bound the changes across it (equal-power gains sum to at most sqrt(2)).
            let seam = max_step(&ch[fade_start - 1..fade_end + 1]);
            assert!(
                seam <= before.max(after) * std::f32::consts::SQRT_2 * 1.01,
                "seam {k}: step {seam} vs {before} before and {after} after"
            );
        }
    }
    assert!(seams >= 4, "{seams} seams checked");
}

#[test]
fn the_first_span_is_the_plain_request_and_the_stream_equals_the_collected_audio() {
    let m = model();
    let request = || Request::text("rain on a tin roof").seed(11);
    let plain = m.generate(request()).unwrap();
    let seconds = 2.5 * m.max_duration();
    let spans: Vec<_> = m
        .stream(request().duration(seconds), LongFormOptions::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (window, overlap, _) = default_layout(m);
    let hop = window - overlap;
    // Window 0 runs with the request's own seed and no extra condition: its final part is the
    // plain request's audio (same normalisation gain).
    assert_eq!(spans[0].start_frame, 0);
    assert_eq!(spans[0].audio.num_frames(), hop);
    for (a, b) in spans[0]
        .audio
        .channels()
        .iter()
        .zip(plain.audio[0].channels())
    {
        assert_eq!(a[..], b[..hop]);
    }
    // Spans are contiguous and in order.
    let mut next = 0;
    for (k, span) in spans.iter().enumerate() {
        assert_eq!((span.window, span.start_frame), (k, next));
        next += span.audio.num_frames();
    }
    let collected = m
        .generate_long(request().duration(seconds), LongFormOptions::default())
        .unwrap();
    assert_eq!(collected.audio[0].num_frames(), next);
    for (c, all) in collected.audio[0].channels().iter().enumerate() {
        let streamed: Vec<f32> = spans
            .iter()
            .flat_map(|s| s.audio.channels()[c].clone())
            .collect();
        assert_eq!(&streamed, all);
    }
}

#[test]
fn same_seed_bit_identical_and_windows_differ() {
    let m = model();
    let seconds = 3.0 * m.max_duration();
    let run = |seed: u64| {
        m.generate_long(
            Request::text("rain on a tin roof")
                .duration(seconds)
                .seed(seed),
            LongFormOptions::default()
                .overlap(m.max_duration() / 5.0)
                .crossfade(m.max_duration() / 10.0),
        )
        .unwrap()
    };
    let (a, b, c) = (run(9), run(9), run(10));
    assert_eq!(a.seed, Some(9));
    assert_eq!(
        a.audio[0].channels(),
        b.audio[0].channels(),
        "same seed, same bits"
    );
    assert_ne!(a.audio[0].channels(), c.audio[0].channels());
    // Each window has its own derived seed: no window repeats the first one.
    assert_ne!(window_seed(9, 1), 9);
}

/// `n` frames of 8x8 pixels, every pixel of frame `i` equal to `i % 251`.
fn numbered_frames(n: usize, fps: f64) -> VideoFrames {
    let (h, w) = (8usize, 8usize);
    let pixels: Vec<u8> = (0..n)
        .flat_map(|i| std::iter::repeat_n((i % 251) as u8, h * w * 3))
        .collect();
    VideoFrames::new(pixels, [n, h, w, 3], fps).unwrap()
}

#[test]
fn video_windows_read_the_frames_of_their_own_span() {
    let m = model();
    let window_seconds = m.max_duration();
    let seconds = 2.5 * window_seconds;
    // 25 fps: both encoders' frame times fall on source frames.
    let fps = 25.0;
    let video = numbered_frames((seconds * fps) as usize, fps);
    let stream = m
        .stream(
            Request::new().video_frames(video.clone()).seed(1),
            LongFormOptions::default(),
        )
        .unwrap();
    // Without a duration, the whole video.
    let rate = m.sample_rate() as f64;
    assert_eq!(stream.total_frames(), (seconds * rate).round() as usize);
    assert!(stream.windows() >= 3);
    for k in 0..stream.windows() {
        let plan = stream.window_plan(k).unwrap();
        let (window, overlap, _) = default_layout(m);
        let start = (k * (window - overlap)) as f64 / rate;
        assert_eq!(plan.start_seconds, start);
        assert_eq!(plan.video_start_seconds, start);
        let (slice, first) = window_frames(&video, &plan).unwrap();
        for sampling in [plan.clip_sampling, plan.sync_sampling] {
            let step = 1.0 / sampling.target_fps;
            let from_zero = audiox::FrameSampling {
                seek_seconds: 0.0,
                ..sampling
            };
            let ids = from_zero.selected_ids(fps, slice.len()).unwrap();
            let ids = from_zero.output_index(&ids);
            assert_eq!(ids.len(), (window_seconds * sampling.target_fps) as usize);
            for (j, &id) in ids.iter().enumerate() {
                // The frame's number in the whole video (its pixel value) and its time.
                let source = slice.frame(id).unwrap()[0] as usize;
                assert_eq!(source, (first + id) % 251);
                let time = (first + id) as f64 / fps;
                // Past the video's end (the last window may reach beyond it) the frame
                // sampling repeats its last frame time inside the video, as a plain request
                // with a video shorter than the window does.
                let last = video.len() as f64 / fps - 1.0 / fps;
                let mut wanted = start + j as f64 * step;
                if wanted > last + 1e-9 {
                    wanted = start + ((last - start) / step + 1e-9).floor() * step;
                }
                assert!(
                    (time - wanted).abs() < 0.5 / fps + 1e-9,
                    "window {k}, frame {j}: read {time} s for {wanted} s"
                );
            }
        }
    }
    // And the whole run works.
    let out = m
        .generate_long(
            Request::new().video_frames(video).seed(1),
            LongFormOptions::default(),
        )
        .unwrap();
    assert_eq!(out.audio[0].num_frames(), (seconds * rate).round() as usize);
}

#[test]
fn progress_names_window_and_step_and_cancel_stops_midway() {
    let m = model();
    let seconds = 2.5 * m.max_duration();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let out = m.generate_long_with(
        Request::text("x").duration(seconds).seed(1).steps(3),
        LongFormOptions::default(),
        None,
        move |p| {
            log.lock()
                .unwrap()
                .push((p.window, p.windows, p.step, p.steps))
        },
    );
    assert!(out.is_ok());
    let seen = seen.lock().unwrap().clone();
    let windows = seen[0].1;
    assert!(windows >= 3);
    let expected: Vec<_> = (0..windows)
        .flat_map(|w| (0..3).map(move |s| (w, windows, s, 3)))
        .collect();
    assert_eq!(seen, expected);

    // Cancel at the second step of the second window.
    let token = CancelToken::new();
    let cancel = token.clone();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let log = steps.clone();
    let result = m.generate_long_with(
        Request::text("x").duration(seconds).seed(1).steps(3),
        LongFormOptions::default(),
        Some(token),
        move |p| {
            log.lock().unwrap().push((p.window, p.step));
            if (p.window, p.step) == (1, 0) {
                cancel.cancel();
            }
        },
    );
    match result {
        Err(Error::Cancelled {
            completed_steps,
            total_steps,
        }) => assert_eq!((completed_steps, total_steps), (1, 3)),
        other => panic!("expected Cancelled, got {:?}", other.map(|g| g.timings)),
    }
    assert_eq!(*steps.lock().unwrap(), vec![(0, 0), (0, 1), (0, 2), (1, 0)]);

    // Cancelled during the last step of a window: as for a plain request, a cancel that arrives
    // before the window's audio is returned yields `Cancelled` and no audio, and the stream ends.
    let token = CancelToken::new();
    let cancel = token.clone();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let log = steps.clone();
    let mut stream = m
        .stream(
            Request::text("x").duration(seconds).seed(1).steps(3),
            LongFormOptions::default(),
        )
        .unwrap()
        .with_cancel(token)
        .with_progress(move |p| {
            log.lock().unwrap().push((p.window, p.step));
            if (p.window, p.step) == (0, 2) {
                cancel.cancel();
            }
        });
    match stream.next() {
        Some(Err(Error::Cancelled {
            completed_steps,
            total_steps,
        })) => assert_eq!((completed_steps, total_steps), (3, 3)),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(stream.next().is_none());
    assert_eq!(*steps.lock().unwrap(), vec![(0, 0), (0, 1), (0, 2)]);

    // A stream yields the error once, then ends.
    let token = CancelToken::new();
    token.cancel();
    let mut stream = m
        .stream(
            Request::text("x").duration(seconds).seed(1),
            LongFormOptions::default(),
        )
        .unwrap()
        .with_cancel(token);
    assert!(matches!(stream.next(), Some(Err(Error::Cancelled { .. }))));
    assert!(stream.next().is_none());

    // `generate_with` routes a long request here and reports to its StepControl.
    let token = CancelToken::new();
    let cancel = token.clone();
    let count = Arc::new(Mutex::new(0usize));
    let c = count.clone();
    let mut control = StepControl::new()
        .with_cancel(token)
        .with_progress(move |_| {
            let mut n = c.lock().unwrap();
            *n += 1;
            if *n == 5 {
                cancel.cancel();
            }
        });
    let routed = m.generate_with(
        Request::text("x").duration(seconds).seed(1).steps(3),
        &mut control,
    );
    assert!(matches!(routed, Err(Error::Cancelled { .. })));
    assert_eq!(*count.lock().unwrap(), 5);
}

#[test]
fn long_requests_that_cannot_be_served_are_refused() {
    let m = model();
    let seconds = 2.0 * m.max_duration();
    let refused = |r: Request, o: LongFormOptions| match m.stream(r, o) {
        Err(Error::InvalidRequest(msg)) => msg,
        other => panic!("expected InvalidRequest, got {other:?}"),
    };
    let long = || Request::text("x").duration(seconds);
    refused(long().num_samples(2), LongFormOptions::default());
    refused(long(), LongFormOptions::default().overlap(m.max_duration()));
    refused(
        long(),
        LongFormOptions::default().overlap(1.0).crossfade(2.0),
    );
    refused(
        Request::text("x").duration(audiox::long_form::MAX_LONG_FORM_SECONDS * 2.0),
        LongFormOptions::default(),
    );
    // A video shorter than the windows asked for.
    let short = numbered_frames((m.max_duration() * 25.0) as usize, 25.0);
    let msg = refused(long().video_frames(short), LongFormOptions::default());
    assert!(msg.contains("past its end"), "{msg}");
    // A still image has no length of its own: one window without a duration, refused below.
    let image = audiox::StillImage::from_rgb(vec![0; 12], 2, 2).unwrap();
    assert!(audiox::long_form::video_seconds(&audiox::VideoInput::Image(image)).is_err());
}

#[test]
fn wav_stream_writes_what_it_is_given() {
    let m = model();
    let seconds = 2.0 * m.max_duration();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.wav");
    let stream = m
        .stream(
            Request::text("x").duration(seconds).seed(2),
            LongFormOptions::default(),
        )
        .unwrap();
    let mut wav = WavStream::create(
        &path,
        stream.sample_rate(),
        stream.channels(),
        WavFormat::Float32,
    )
    .unwrap();
    let mut all: Vec<Vec<f32>> = vec![Vec::new(); stream.channels()];
    for span in stream {
        let span = span.unwrap();
        wav.write(&span.audio).unwrap();
        for (a, c) in all.iter_mut().zip(span.audio.channels()) {
            a.extend(c);
        }
    }
    wav.finish().unwrap();
    let read = Audio::read(&path).unwrap();
    assert_eq!(
        read.num_frames(),
        (seconds * m.sample_rate() as f64).round() as usize
    );
    assert_eq!(read.channels(), &all[..]);
}

#[cfg(feature = "video")]
#[test]
fn a_whole_video_file_gets_a_soundtrack_of_its_length_and_is_muxed() {
    use std::process::Command;
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("NOTICE: ffmpeg not found on the PATH; whole-video test skipped");
        return;
    }
    let m = model();
    let seconds = 2.5 * m.max_duration();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=duration={seconds}:size=64x48:rate=25"))
        .args(["-pix_fmt", "yuv420p"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());
    let out = m
        .generate_long(
            Request::new().video_file(&video).seed(4),
            LongFormOptions::default(),
        )
        .unwrap();
    let audio = &out.audio[0];
    assert!((audio.duration_secs() - seconds).abs() <= 1.0 / m.sample_rate() as f64);
    let wav = dir.path().join("sound.wav");
    audio.write_wav(&wav).unwrap();
    let muxed = dir.path().join("muxed.mp4");
    audiox_encoders::video_file::Ffmpeg::new()
        .mux_segment(&video, &wav, &muxed, Some((0.0, audio.duration_secs())))
        .unwrap();
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type:format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&muxed)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(text.contains("audio") && text.contains("video"), "{text}");
    let duration: f64 = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next()
        .unwrap();
    assert!((duration - seconds).abs() < 0.5, "muxed {duration} s");
}

/// A test video for the model: the Synchformer's frame rate (both encoders' frame times fall
/// on frames), frames larger than the CLIP size, `seconds` long, lossless.
#[cfg(feature = "video")]
fn model_test_video(dir: &std::path::Path, name: &str, seconds: f64) -> Option<std::path::PathBuf> {
    use std::process::Command;
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("NOTICE: ffmpeg not found on the PATH; video file test skipped");
        return None;
    }
    let m = model();
    let plan = m
        .stream(Request::text("x").seed(1), LongFormOptions::default())
        .unwrap()
        .window_plan(0)
        .unwrap();
    let side = plan.clip_sampling.size;
    let fps = plan.sync_sampling.target_fps;
    let video = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc=duration={seconds}:size={}x{}:rate={fps}",
            2 * side,
            side + side / 2
        ))
        .args(["-c:v", "ffv1"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());
    Some(video)
}

/// A video file is decoded once for all the windows (one ffmpeg process): every window gets
/// the frames a decoder of its own reads, so the audio is the audio of the same frames given
/// in memory, bit for bit, including the last window, which runs past the video's end.
#[cfg(feature = "video")]
#[test]
fn a_video_file_decoded_once_gives_the_audio_of_per_window_decoding() {
    use audiox_encoders::video_file::Ffmpeg;
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let seconds = 2.3 * m.max_duration();
    let Some(video) = model_test_video(dir.path(), "clip.mkv", seconds) else {
        return;
    };
    let request = || Request::text("rain").video_file(&video).seed(5);

    // The windows' frames: the shared decoder gives what one decoder per window gives.
    let stream = m
        .stream(request().duration(seconds), LongFormOptions::default())
        .unwrap();
    assert!(stream.windows() >= 3);
    let windows: Vec<_> = (0..stream.windows())
        .map(|k| {
            let p = stream.window_plan(k).unwrap();
            [p.clip_sampling, p.sync_sampling]
        })
        .collect();
    let info = Ffmpeg::new().probe(&video).unwrap();
    let frames = (seconds * info.fps).round() as usize;
    let last = windows.last().unwrap()[1];
    assert!(
        last.candidate_ids(info.fps).unwrap().next_back().unwrap() >= frames,
        "the last window runs past the video's end"
    );
    let shared = Ffmpeg::new()
        .sample_windows(&video, windows.clone())
        .unwrap();
    for (k, got) in shared.enumerate() {
        let own = Ffmpeg::new().sample(&video, windows[k]).unwrap();
        assert_eq!(got.unwrap(), own, "window {k}");
    }

    // The audio: the same frames decoded in memory give the same bits.
    let file = m
        .generate_long(request().duration(seconds), LongFormOptions::default())
        .unwrap();
    let decoded = audiox_encoders::video_file::decode(&video).unwrap();
    assert_eq!(decoded.len(), frames);
    let memory = m
        .generate_long(
            Request::text("rain")
                .video_frames(decoded)
                .seed(5)
                .duration(seconds),
            LongFormOptions::default(),
        )
        .unwrap();
    assert_eq!(file.audio[0].channels(), memory.audio[0].channels());
    // And window 0 is the plain request, which reads the file with a decoder of its own.
    let plain = m.generate(request()).unwrap();
    let (window, overlap, _) = default_layout(m);
    for (a, b) in file.audio[0]
        .channels()
        .iter()
        .zip(plain.audio[0].channels())
    {
        assert_eq!(a[..window - overlap], b[..window - overlap]);
    }
}

/// The ffmpeg children of this process whose command line names `path`.
#[cfg(all(feature = "video", target_os = "linux"))]
fn ffmpeg_children_reading(path: &std::path::Path) -> Vec<u32> {
    let me = std::process::id();
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(me) && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// A stream dropped after its first window stops its ffmpeg decoder: no child is left running
/// or unreaped.
#[cfg(all(feature = "video", target_os = "linux"))]
#[test]
fn dropping_a_video_file_stream_stops_its_decoder() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let seconds = 2.5 * m.max_duration();
    let Some(video) = model_test_video(dir.path(), "dropped.mkv", seconds) else {
        return;
    };
    let mut stream = m
        .stream(
            Request::text("x").video_file(&video).seed(1),
            LongFormOptions::default(),
        )
        .unwrap();
    assert!(ffmpeg_children_reading(&video).is_empty());
    stream.next().unwrap().unwrap();
    let running = ffmpeg_children_reading(&video);
    assert_eq!(running.len(), 1, "one decoder for all the windows");
    drop(stream);
    for pid in running {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "ffmpeg {pid} is left behind"
        );
    }
}
