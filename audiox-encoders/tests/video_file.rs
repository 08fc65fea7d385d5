//! Decoding video files with ffmpeg (crate feature `video`), on small videos made here with
//! ffmpeg's test sources. Skipped, with a notice, where ffmpeg is not installed.
#![cfg(feature = "video")]

use std::path::{Path, PathBuf};
use std::process::Command;

use audiox_core::Error;
use audiox_encoders::frames::{FrameSampling, Pixels, SampledFrames};
use audiox_encoders::video_file::{Ffmpeg, decode, mux, probe, sample};

fn ffmpeg_available() -> bool {
    let ok = Ffmpeg::new().check().is_ok();
    if !ok {
        eprintln!("NOTICE: ffmpeg/ffprobe not found on the PATH; video file tests skipped");
    }
    ok
}

/// Runs ffmpeg to make a test file.
fn make(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not make {name}");
    out
}

/// A lossless clip whose frame `i` is the solid colour (4i, 255 - 4i, 128): the decoded frame
/// number can be read back from any pixel.
fn counter_clip(dir: &Path, name: &str, size: &str, rate: &str, seconds: f64) -> PathBuf {
    let source = format!(
        "nullsrc=s={size}:r={rate}:d={seconds},geq=r='min(4*N,255)':g='max(255-4*N,0)':b=128"
    );
    make(
        dir,
        name,
        &[
            "-f", "lavfi", "-i", &source, "-c:v", "ffv1", "-pix_fmt", "bgr0",
        ],
    )
}

fn frame_number(frames: &SampledFrames, k: usize) -> usize {
    let Pixels::U8(p) = frames.pixels() else {
        panic!("video frames are u8")
    };
    let plane = frames.size() * frames.size();
    (p[k * 3 * plane] / 4) as usize
}

#[test]
fn probe_reports_size_and_average_rate() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = counter_clip(dir.path(), "c.mkv", "40x30", "30", 2.0);
    let info = probe(&clip).unwrap();
    assert_eq!((info.width, info.height), (40, 30));
    assert_eq!(info.fps, 30.0);
    let ntsc = make(
        dir.path(),
        "ntsc.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=30000/1001:duration=1",
            "-c:v",
            "mpeg4",
        ],
    );
    let info = probe(&ntsc).unwrap();
    assert_eq!((info.width, info.height), (64, 48));
    assert!((info.fps - 30000.0 / 1001.0).abs() < 1e-9, "{}", info.fps);
}

/// The frames ffmpeg sends through the `select` filter are the frames the selection rule picks
/// (read back from their colour), and they equal sampling the fully decoded video in memory.
#[test]
fn selected_frames_are_the_right_frames() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = counter_clip(dir.path(), "c.mkv", "40x30", "30", 2.0);
    let all = decode(&clip).unwrap();
    assert_eq!(all.len(), 60);
    assert_eq!((all.height(), all.width(), all.fps()), (30, 40, 30.0));
    for i in [0, 17, 59] {
        assert_eq!(all.frame(i).unwrap()[0] as usize, (4 * i).min(255));
    }

    let clip_stream = FrameSampling::new(5.0, 2.0, 16);
    let sync_stream = FrameSampling::new(25.0, 1.0, 8).with_seek(0.5);
    let [a, b] = sample(&clip, [clip_stream, sync_stream]).unwrap();
    // 30 fps at 5 fps: every 6th frame.
    assert_eq!(a.source_index(), &[0, 6, 12, 18, 24, 30, 36, 42, 48, 54]);
    // 30 fps at 25 fps from 0.5 s: every 2nd frame from frame 15, 25 frames wanted, 23 exist.
    let expect: Vec<usize> = (15..60).step_by(2).chain([59, 59]).collect();
    assert_eq!(b.source_index(), expect.as_slice());
    for (k, &id) in a.source_index().iter().enumerate() {
        assert_eq!(frame_number(&a, k), id);
    }
    for (k, &id) in b.source_index().iter().enumerate() {
        assert_eq!(frame_number(&b, k), id);
    }
    let [a2, b2] = all.sample_streams([clip_stream, sync_stream]).unwrap();
    assert_eq!(a, a2);
    assert_eq!(b, b2);
}

/// Several rates, sizes and codecs: the file path gives what the in-memory path gives.
#[test]
fn several_rates_and_sizes() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "a.mp4",
            "testsrc=size=64x48:rate=24:duration=1.5",
            "mpeg4",
            24.0,
        ),
        (
            "b.mkv",
            "testsrc=size=50x70:rate=25:duration=1",
            "ffv1",
            25.0,
        ),
        (
            "c.mp4",
            "testsrc2=size=96x54:rate=30000/1001:duration=1.2",
            "mpeg4",
            30000.0 / 1001.0,
        ),
        (
            "d.mkv",
            "testsrc=size=32x32:rate=10:duration=2",
            "ffv1",
            10.0,
        ),
    ];
    for (name, source, codec, fps) in cases {
        let file = make(
            dir.path(),
            name,
            &["-f", "lavfi", "-i", source, "-c:v", codec],
        );
        let all = decode(&file).unwrap();
        assert!((all.fps() - fps).abs() < 1e-9, "{name}: {}", all.fps());
        let clip_stream = FrameSampling::new(5.0, 1.0, 32);
        let sync_stream = FrameSampling::new(25.0, 1.0, 24);
        let [a, b] = sample(&file, [clip_stream, sync_stream]).unwrap();
        assert_eq!(a.shape(), [5, 3, 32, 32], "{name}");
        assert_eq!(b.shape(), [25, 3, 24, 24], "{name}");
        let step = (fps / 25.0).ceil() as usize;
        assert_eq!(b.source_index()[1], step, "{name}");
        let [a2, b2] = all.sample_streams([clip_stream, sync_stream]).unwrap();
        assert_eq!(a, a2, "{name}");
        assert_eq!(b, b2, "{name}");
    }
}

/// A clip shorter than the requested duration is padded with its last frame.
#[test]
fn short_clip_is_padded_with_its_last_frame() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = counter_clip(dir.path(), "short.mkv", "40x30", "25", 0.4);
    let [frames] = sample(&clip, [FrameSampling::new(25.0, 2.0, 16)]).unwrap();
    assert_eq!(frames.len(), 50);
    let index = frames.source_index();
    assert_eq!(&index[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(index[10..].iter().all(|&i| i == 9));
    assert_eq!(frame_number(&frames, 49), 9);
    // Starting after the end is refused.
    let late = FrameSampling::new(25.0, 2.0, 16).with_seek(3.0);
    assert!(matches!(
        sample(&clip, [late]),
        Err(Error::InvalidRequest(_))
    ));
}

#[test]
fn files_that_are_not_videos_are_typed_errors() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, b"this is not a video at all").unwrap();
    let audio = make(
        dir.path(),
        "tone.wav",
        &["-f", "lavfi", "-i", "sine=frequency=440:duration=0.5"],
    );
    let s = FrameSampling::new(5.0, 1.0, 16);
    for file in [&text, &audio] {
        for result in [
            probe(file).map(|_| ()),
            decode(file).map(|_| ()),
            sample(file, [s]).map(|_| ()),
        ] {
            match result {
                Err(Error::ExternalTool { tool, message }) => {
                    assert_eq!(tool, "ffprobe");
                    assert!(message.contains(&file.display().to_string()), "{message}");
                }
                other => panic!("{}: expected ExternalTool, got {other:?}", file.display()),
            }
        }
    }
    assert!(matches!(
        probe(dir.path().join("absent.mp4")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn a_missing_ffmpeg_is_a_typed_error() {
    let missing = Ffmpeg::with_programs("/nonexistent/ffmpeg", "/nonexistent/ffprobe");
    match missing.check() {
        Err(Error::ExternalTool { tool, message }) => {
            assert_eq!(tool, "ffmpeg");
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("expected ExternalTool, got {other:?}"),
    }
    // A real file, so that the program is what is missing.
    let file = tempfile::NamedTempFile::new().unwrap();
    assert!(matches!(
        missing.probe(file.path()),
        Err(Error::ExternalTool { .. })
    ));
}

#[test]
fn mux_copies_the_video_and_encodes_the_audio() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let video = make(
        dir.path(),
        "v.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=25:duration=2",
            "-c:v",
            "mpeg4",
        ],
    );
    let wav = make(
        dir.path(),
        "a.wav",
        &["-f", "lavfi", "-i", "sine=frequency=440:duration=1"],
    );
    let out = dir.path().join("out.mp4");
    mux(&video, &wav, &out).unwrap();
    let streams = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&streams.stdout);
    assert!(text.contains("mpeg4,video"), "{text}");
    assert!(text.contains("aac,audio"), "{text}");
    // `-shortest`: cut to the 1 s of audio (up to the encoder's frame granularity).
    let info = probe(&out).unwrap();
    assert!(info.duration_seconds.unwrap() < 1.5, "{info:?}");
    // Refuses to overwrite an input.
    assert!(matches!(
        mux(&video, &wav, &video),
        Err(Error::InvalidRequest(_))
    ));
    // A segment of the video.
    let out2 = dir.path().join("seg.mp4");
    Ffmpeg::new()
        .mux_segment(&video, &wav, &out2, Some((0.5, 1.0)))
        .unwrap();
    assert!(out2.exists());
}

// -------------------------------------------------------------------------------------------
// Untrusted input
// -------------------------------------------------------------------------------------------

#[test]
fn a_name_that_looks_like_a_protocol_is_read_as_a_file() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = counter_clip(dir.path(), "c.mkv", "40x30", "30", 1.0);
    let odd = dir.path().join("x:y.mkv");
    std::fs::copy(&clip, &odd).unwrap();
    // Relative, so that ffmpeg sees `x:y.mkv` (an unknown protocol `x` without the prefix).
    let here = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let info = probe("x:y.mkv");
    let frames = sample("x:y.mkv", [FrameSampling::new(5.0, 1.0, 8)]);
    std::env::set_current_dir(here).unwrap();
    assert_eq!(info.unwrap().width, 40);
    assert_eq!(frames.unwrap()[0].len(), 5);
}

#[test]
fn playlists_and_concat_lists_are_refused_without_opening_anything() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = counter_clip(dir.path(), "c.mkv", "40x30", "30", 1.0);
    // A local playlist pointing at a local file: the hls demuxer is not a video container.
    let m3u = dir.path().join("list.mp4");
    std::fs::write(
        &m3u,
        format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{}\n#EXT-X-ENDLIST\n",
            clip.display()
        ),
    )
    .unwrap();
    let remote = dir.path().join("remote.mp4");
    std::fs::write(
        &remote,
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    for file in [&m3u, &remote] {
        match probe(file) {
            Err(Error::ExternalTool { tool, .. }) => assert_eq!(tool, "ffprobe"),
            other => panic!("{}: expected ExternalTool, got {other:?}", file.display()),
        }
        assert!(sample(file, [FrameSampling::new(5.0, 1.0, 8)]).is_err());
    }
}

#[test]
fn frame_sizes_are_checked_before_decoding() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = counter_clip(dir.path(), "c.mkv", "40x30", "30", 1.0);
    let small = audiox_core::limits::Limits {
        max_image_side: 32,
        ..Default::default()
    };
    let ffmpeg = Ffmpeg::new().with_limits(&small);
    for result in [
        ffmpeg.probe(&clip).map(|_| ()),
        ffmpeg.decode(&clip).map(|_| ()),
        ffmpeg
            .sample(&clip, [FrameSampling::new(5.0, 1.0, 8)])
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::OutOfRange { .. })),
            "{result:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_stalled_input_stops_at_the_time_limit() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A FIFO nobody writes to: opening it blocks forever.
    let fifo = dir.path().join("stall.mp4");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("NOTICE: mkfifo unavailable; stalled-input test skipped");
        return;
    }
    let started = std::time::Instant::now();
    let result = Ffmpeg::new()
        .with_timeout(std::time::Duration::from_millis(500))
        .probe(&fifo);
    let elapsed = started.elapsed();
    match result {
        Err(Error::ExternalTool { message, .. }) => {
            assert!(message.contains("time limit"), "{message}")
        }
        other => panic!("expected a time-limit error, got {other:?}"),
    }
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn cancelling_stops_the_decoder() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = counter_clip(dir.path(), "c.mkv", "40x30", "30", 2.0);
    let ffmpeg = Ffmpeg::new().with_cancel(std::sync::Arc::new(|| true));
    assert!(matches!(
        ffmpeg.sample(&clip, [FrameSampling::new(5.0, 1.0, 8)]),
        Err(Error::Cancelled { .. })
    ));
    assert!(matches!(ffmpeg.decode(&clip), Err(Error::Cancelled { .. })));
}

#[test]
fn mux_targets_are_validated_on_canonical_paths() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("v.mp4");
    let wav = dir.path().join("a.wav");
    std::fs::write(&video, b"v").unwrap();
    std::fs::write(&wav, b"a").unwrap();
    let inputs = [video.as_path(), wav.as_path()];
    let refused = |out: &Path| {
        matches!(
            audiox_encoders::video_file::check_mux_target(&inputs, out),
            Err(Error::InvalidRequest(_))
        )
    };
    assert!(refused(&video));
    assert!(refused(&dir.path().join(".").join("v.mp4")));
    assert!(refused(Path::new("-y.mp4")));
    assert!(refused(Path::new("")));
    #[cfg(unix)]
    {
        let link = dir.path().join("link.mp4");
        std::os::unix::fs::symlink(&video, &link).unwrap();
        assert!(refused(&link));
        let hard = dir.path().join("hard.mp4");
        std::fs::hard_link(&video, &hard).unwrap();
        assert!(refused(&hard));
    }
    assert!(
        audiox_encoders::video_file::check_mux_target(&inputs, &dir.path().join("out.mp4")).is_ok()
    );
    // An existing, unrelated target is fine (it is replaced only when the mux succeeds).
    let other = dir.path().join("other.mp4");
    std::fs::write(&other, b"o").unwrap();
    assert!(audiox_encoders::video_file::check_mux_target(&inputs, &other).is_ok());
}

/// `count` windows of `seconds`, `hop` seconds apart, each read at 5 fps (size 16) and 25 fps
/// (size 8), as a long-form request reads them.
fn overlapping_windows(count: usize, seconds: f64, hop: f64) -> Vec<[FrameSampling; 2]> {
    (0..count)
        .map(|k| {
            let start = k as f64 * hop;
            [
                FrameSampling::new(5.0, seconds, 16).with_seek(start),
                FrameSampling::new(25.0, seconds, 8).with_seek(start),
            ]
        })
        .collect()
}

/// One decoder for every window gives each window exactly what a decoder of its own gives,
/// including the padded window that runs past the video's end, and holds no more than about
/// one window of frames.
#[test]
fn one_decoder_serves_every_window_as_a_decoder_per_window() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 30 fps: 5 fps reads every 6th frame and 25 fps every 2nd, from seeks that do not fall on
    // a multiple of either step.
    let clip = counter_clip(dir.path(), "c.mkv", "40x30", "30", 5.0);
    let windows = overlapping_windows(4, 2.0, 1.3);
    let most: usize = windows[0].iter().map(|s| s.output_len()).sum();
    let mut stream = Ffmpeg::new()
        .sample_windows(&clip, windows.clone())
        .unwrap();
    assert_eq!(stream.windows(), windows.len());
    for (k, samplings) in windows.iter().enumerate() {
        let got = stream.next().unwrap().unwrap();
        let expect = sample(&clip, *samplings).unwrap();
        assert_eq!(got, expect, "window {k}");
        for (frames, s) in got.iter().zip(samplings) {
            for (j, &id) in frames.source_index().iter().enumerate() {
                // The clip's colour counts frames up to 63, then stays.
                assert_eq!(frame_number(frames, j), id.min(63), "window {k}");
            }
            assert_eq!(frames.len(), s.output_len());
        }
        assert!(
            stream.held_frames() <= most,
            "window {k}: {} frames held, one window reads {most}",
            stream.held_frames()
        );
    }
    // The last window (3.9 s + 2 s) ran past the 5 s video: padded with its last frame.
    let last = sample(&clip, windows[3]).unwrap();
    assert_eq!(*last[1].source_index().last().unwrap(), 149);
    assert!(stream.next().is_none());
    assert_eq!(stream.held_frames(), 0);

    // A window starting past the end: the error a decoder of its own gives.
    let mut past = overlapping_windows(2, 2.0, 1.0);
    past.push(overlapping_windows(1, 2.0, 0.0)[0].map(|s| s.with_seek(6.0)));
    let mut stream = Ffmpeg::new().sample_windows(&clip, past.clone()).unwrap();
    assert!(stream.next().unwrap().is_ok() && stream.next().unwrap().is_ok());
    let alone = sample(&clip, past[2]).unwrap_err().to_string();
    match stream.next() {
        Some(Err(e @ Error::InvalidRequest(_))) => assert_eq!(e.to_string(), alone),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    assert!(stream.next().is_none(), "the stream ends after an error");

    // Windows going back are refused before anything is decoded.
    let mut back = overlapping_windows(2, 2.0, 1.0);
    back.reverse();
    assert!(matches!(
        Ffmpeg::new().sample_windows(&clip, back),
        Err(Error::InvalidRequest(_))
    ));
}

/// The ffmpeg children of this process whose command line names `path`.
#[cfg(target_os = "linux")]
fn ffmpeg_children_reading(path: &Path) -> Vec<u32> {
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

/// Dropping the windows half-way, or cancelling, stops ffmpeg: no child is left running or
/// unreaped.
#[cfg(target_os = "linux")]
#[test]
fn dropping_or_cancelling_the_windows_stops_the_decoder() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Enough frames after the first window that ffmpeg is still writing when it is dropped.
    let clip = counter_clip(dir.path(), "dropped.mkv", "160x120", "30", 8.0);
    let mut stream = Ffmpeg::new()
        .sample_windows(&clip, overlapping_windows(5, 2.0, 1.5))
        .unwrap();
    assert!(
        ffmpeg_children_reading(&clip).is_empty(),
        "nothing runs before the first window"
    );
    stream.next().unwrap().unwrap();
    let running = ffmpeg_children_reading(&clip);
    assert_eq!(running.len(), 1, "one decoder for all the windows");
    drop(stream);
    for pid in running {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "ffmpeg {pid} is left behind"
        );
    }

    let clip = counter_clip(dir.path(), "cancelled.mkv", "160x120", "30", 8.0);
    let mut stream = Ffmpeg::new()
        .sample_windows(&clip, overlapping_windows(5, 2.0, 1.5))
        .unwrap();
    stream.next().unwrap().unwrap();
    let running = ffmpeg_children_reading(&clip);
    assert_eq!(running.len(), 1);
    stream.set_cancel(Some(std::sync::Arc::new(|| true)));
    assert!(matches!(stream.next(), Some(Err(Error::Cancelled { .. }))));
    for pid in running {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "ffmpeg {pid} is left behind"
        );
    }
    assert!(stream.next().is_none());
}
