//! Video files through the `ffmpeg` and `ffprobe` programs (crate feature `video`).
//!
//! `ffprobe` reports the first video stream's size and average frame rate; `ffmpeg` decodes it
//! to raw RGB24 frames on a pipe. Only the frames a [`FrameSampling`] selects are sent (an
//! ffmpeg `select` filter on the frame number) and each is resized as it arrives, so a long or
//! large video never sits in memory whole. The selection is the reference's
//! ([`FrameSampling`]); frame numbers count decoded frames from the start of the stream, and
//! rotation metadata is ignored, as the reference's decoder (decord) does.
//! [`Ffmpeg::sample_windows`] reads the frames of many overlapping windows (a long-form
//! soundtrack) with one decoder, so the file is decoded once. [`mux`] puts generated audio
//! under a video.
//!
//! Errors: a missing input file is [`Error::Io`]; a missing program, a file ffmpeg cannot read
//! or one without a video stream is [`Error::ExternalTool`] with ffmpeg's own message.
//!
//! The input is untrusted: ffmpeg and ffprobe read it as a local file only (a `file:` URL and
//! a protocol whitelist of `file,pipe`, so a playlist cannot make them open URLs or other
//! files, and a name like `x:y.mp4` is not read as a protocol); its container must be one of
//! [`VIDEO_CONTAINERS`] (checked by ffprobe, then pinned with `-f` for the decode); its frame
//! size is checked against [`Limits`] before a frame is decoded. Every child is killed and
//! waited for on every error path, each call has a time limit ([`Limits::ffmpeg_timeout`]),
//! and a cancellation check ([`Ffmpeg::with_cancel`]) is polled while frames are read.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use audiox_core::limits::Limits;
use audiox_core::{Error, Result};

use crate::frames::{CHANNELS, FrameSampling, ResizedFrames, Resizer, SampledFrames, VideoFrames};

/// Containers (ffprobe `format_name` entries) read as videos; anything else (playlists, concat
/// lists, raw streams of unknown kind, audio files) is refused before decoding.
pub const VIDEO_CONTAINERS: &[&str] = &[
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "flv", "mpegts", "mpeg",
    "ogg", "asf", "gif", "ivf", "h264", "hevc", "m4v", "mjpeg",
];

/// Most bytes of a child's stdout or stderr kept (the rest is read and dropped).
const MAX_CAPTURE: usize = 1 << 20;

/// How often a blocked read checks the time limit and the cancellation hook.
const POLL: Duration = Duration::from_millis(20);

/// A cancellation check polled while ffmpeg runs (true = stop).
pub type CancelCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Frames decoded and resized together (bounds the memory held for full-size frames).
const DECODE_BATCH: usize = 8;

/// What `ffprobe` reports about a file's first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Average frame rate (`avg_frame_rate`, else `r_frame_rate`), as the reference's
    /// `get_avg_fps()`.
    pub fps: f64,
    /// Frame count from the container, when it records one.
    pub frame_count: Option<usize>,
    /// Duration in seconds, when known.
    pub duration_seconds: Option<f64>,
}

/// The two FFmpeg programs, with the bounds their calls run under.
#[derive(Clone)]
pub struct Ffmpeg {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    limits: Limits,
    cancel: Option<CancelCheck>,
}

impl std::fmt::Debug for Ffmpeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ffmpeg")
            .field("ffmpeg", &self.ffmpeg)
            .field("ffprobe", &self.ffprobe)
            .field("timeout", &self.limits.ffmpeg_timeout)
            .field("cancel", &self.cancel.is_some())
            .finish()
    }
}

/// Kills and waits for a child when dropped: no error path leaves a running or zombie ffmpeg.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is held until waited for")
    }

    /// Waits for the child to exit by itself within `deadline` (polling `cancel`); past it,
    /// or when cancelled, the child is killed (by the drop) and the error returned.
    fn wait(
        mut self,
        tool: &Path,
        deadline: Instant,
        cancel: Option<&CancelCheck>,
    ) -> Result<ExitStatus> {
        loop {
            match self.child().try_wait() {
                Ok(Some(status)) => {
                    self.0 = None;
                    return Ok(status);
                }
                Ok(None) => {
                    check_deadline(tool, deadline, cancel)?;
                    std::thread::sleep(
                        POLL.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
                Err(e) => {
                    return Err(Error::ExternalTool {
                        tool: tool_name(tool),
                        message: format!("waiting for the program: {e}"),
                    });
                }
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An error once `deadline` has passed or `cancel` says stop.
fn check_deadline(tool: &Path, deadline: Instant, cancel: Option<&CancelCheck>) -> Result<()> {
    if cancel.is_some_and(|c| c()) {
        return Err(Error::Cancelled {
            completed_steps: 0,
            total_steps: 0,
        });
    }
    if Instant::now() >= deadline {
        return Err(Error::ExternalTool {
            tool: tool_name(tool),
            message: "stopped at its time limit (Limits::ffmpeg_timeout); the input may stall \
                      or be too long"
                .into(),
        });
    }
    Ok(())
}

/// Reads all of `r` on a thread, keeping at most [`MAX_CAPTURE`] bytes.
fn capture(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut r) = r {
            let _ = r.by_ref().take(MAX_CAPTURE as u64).read_to_end(&mut kept);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }
        kept
    })
}

/// `file:` + `path`: ffmpeg reads it as a local file whatever its name holds.
fn file_url(path: &Path) -> OsString {
    let mut url = OsString::from("file:");
    url.push(path.as_os_str());
    url
}

impl Default for Ffmpeg {
    fn default() -> Self {
        Self::with_programs("ffmpeg", "ffprobe")
    }
}

/// Runs a program to completion within `timeout`, capturing (the start of) its output.
fn run(
    tool: &Path,
    args: &[&OsStr],
    timeout: Duration,
    cancel: Option<&CancelCheck>,
) -> Result<std::process::Output> {
    let deadline = Instant::now() + timeout;
    let child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(tool, e))?;
    let mut guard = ChildGuard(Some(child));
    let stdout = capture(guard.child().stdout.take());
    let stderr = capture(guard.child().stderr.take());
    let status = guard.wait(tool, deadline, cancel)?;
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Whether the ffmpeg at `tool` knows `-fps_mode` (5.1 and later): probed once per program
/// per process.
fn knows_fps_mode(tool: &Path, timeout: Duration) -> bool {
    static PROBED: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    let probed = PROBED.get_or_init(Default::default);
    if let Some(&known) = probed
        .lock()
        .ok()
        .and_then(|m| m.get(tool).copied())
        .as_ref()
    {
        return known;
    }
    let modern = match run(tool, &["-version".as_ref()], timeout, None) {
        Err(_) => true,
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text.split_whitespace().nth(2).unwrap_or("");
            let mut parts = version
                .trim_start_matches('n')
                .split(|c: char| !c.is_ascii_digit())
                .map(|p| p.parse::<u32>());
            match (parts.next(), parts.next()) {
                (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (5, 1),
                // Development builds (`N-...`) and unknown formats: assume a recent FFmpeg.
                _ => true,
            }
        }
    };
    if let Ok(mut m) = probed.lock() {
        m.insert(tool.to_path_buf(), modern);
    }
    modern
}

fn tool_name(tool: &Path) -> String {
    tool.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| tool.display().to_string())
}

fn spawn_error(tool: &Path, e: std::io::Error) -> Error {
    let message = if e.kind() == std::io::ErrorKind::NotFound {
        format!(
            "`{}` was not found: install FFmpeg (e.g. `apt-get install ffmpeg`) or give its path",
            tool.display()
        )
    } else {
        format!("could not start `{}`: {e}", tool.display())
    };
    Error::ExternalTool {
        tool: tool_name(tool),
        message,
    }
}

fn failure(tool: &Path, what: &str, stderr: &[u8]) -> Error {
    // One line: the program's lines joined, so that a caller prints one `error:` line.
    let text = String::from_utf8_lossy(stderr);
    let text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Error::ExternalTool {
        tool: tool_name(tool),
        message: if text.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {text}")
        },
    }
}

fn existing_file(path: &Path) -> Result<()> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| Error::io(path, e))
}

/// `"30000/1001"` -> 29.97; `None` for `"0/0"` and other non-rates.
fn parse_rate(text: &str) -> Option<f64> {
    let (num, den) = text.split_once('/').unwrap_or((text, "1"));
    let (num, den): (f64, f64) = (num.trim().parse().ok()?, den.trim().parse().ok()?);
    let rate = num / den;
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

impl Ffmpeg {
    /// `ffmpeg` and `ffprobe` from the `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Programs at explicit paths.
    pub fn with_programs(ffmpeg: impl Into<PathBuf>, ffprobe: impl Into<PathBuf>) -> Self {
        Ffmpeg {
            ffmpeg: ffmpeg.into(),
            ffprobe: ffprobe.into(),
            limits: Limits::default(),
            cancel: None,
        }
    }

    /// The bounds of every call: the time limit ([`Limits::ffmpeg_timeout`]) and the frame
    /// size ([`Limits::max_image_side`], [`Limits::max_image_pixels`]).
    pub fn with_limits(mut self, limits: &Limits) -> Self {
        self.limits = limits.clone();
        self
    }

    /// The time limit of each ffmpeg or ffprobe call (default 600 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.limits.ffmpeg_timeout = timeout;
        self
    }

    /// A check polled while ffmpeg runs (every few milliseconds while frames are awaited):
    /// when it returns true the child is killed and the call returns [`Error::Cancelled`].
    pub fn with_cancel(mut self, cancel: CancelCheck) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn run(&self, tool: &Path, args: &[&OsStr]) -> Result<std::process::Output> {
        run(tool, args, self.limits.ffmpeg_timeout, self.cancel.as_ref())
    }

    /// Checks that both programs run; the error says how to get them.
    pub fn check(&self) -> Result<()> {
        for tool in [&self.ffmpeg, &self.ffprobe] {
            let out = self.run(tool, &["-version".as_ref()])?;
            if !out.status.success() {
                return Err(failure(tool, "`-version` failed", &out.stderr));
            }
        }
        Ok(())
    }

    /// Size and frame rate of the first video stream of `path`.
    pub fn probe(&self, path: impl AsRef<Path>) -> Result<VideoInfo> {
        self.probe_format(path.as_ref()).map(|(info, _)| info)
    }

    /// [`Ffmpeg::probe`] and the demuxer to pin for decoding (the first name of ffprobe's
    /// `format_name`, which must be one of [`VIDEO_CONTAINERS`]).
    fn probe_format(&self, path: &Path) -> Result<(VideoInfo, String)> {
        existing_file(path)?;
        let url = file_url(path);
        let args: [&OsStr; 12] = [
            "-v".as_ref(),
            "error".as_ref(),
            "-protocol_whitelist".as_ref(),
            "file,pipe".as_ref(),
            "-select_streams".as_ref(),
            "v:0".as_ref(),
            "-show_entries".as_ref(),
            "stream=width,height,avg_frame_rate,r_frame_rate,nb_frames:format=duration,format_name"
                .as_ref(),
            "-of".as_ref(),
            "json".as_ref(),
            "-i".as_ref(),
            url.as_os_str(),
        ];
        let out = self.run(&self.ffprobe, &args)?;
        if !out.status.success() {
            return Err(failure(
                &self.ffprobe,
                &format!("cannot read {}", path.display()),
                &out.stderr,
            ));
        }
        let not_video = |why: &str| Error::ExternalTool {
            tool: tool_name(&self.ffprobe),
            message: format!("{} is not a video: {why}", path.display()),
        };
        let json: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| not_video(&e.to_string()))?;
        let stream = json
            .get("streams")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .ok_or_else(|| not_video("it has no video stream"))?;
        let size = |k: &str| {
            stream
                .get(k)
                .and_then(Value::as_u64)
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| not_video(&format!("no frame {k}")))
        };
        let rate = |k: &str| stream.get(k).and_then(Value::as_str).and_then(parse_rate);
        let fps = rate("avg_frame_rate")
            .or_else(|| rate("r_frame_rate"))
            .ok_or_else(|| not_video("no frame rate"))?;
        let number = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0)
        };
        let format = json
            .get("format")
            .and_then(|f| f.get("format_name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !format.split(',').any(|f| VIDEO_CONTAINERS.contains(&f)) {
            return Err(not_video(&format!(
                "its container `{format}` is not one of the accepted video containers ({})",
                VIDEO_CONTAINERS.join(", ")
            )));
        }
        let demuxer = format.split(',').next().unwrap_or(format).to_string();
        let (width, height) = (size("width")?, size("height")?);
        self.limits
            .check_image(&format!("video frame of {}", path.display()), width, height)?;
        let info = VideoInfo {
            width,
            height,
            fps,
            frame_count: number(stream.get("nb_frames")).map(|n| n as usize),
            duration_seconds: number(json.get("format").and_then(|f| f.get("duration"))),
        };
        Ok((info, demuxer))
    }

    /// Every frame of `path` at its native size. Holds the whole video in memory (1920x1080
    /// is 6 MB a frame): for short clips; [`Ffmpeg::sample`] reads only what it needs.
    pub fn decode(&self, path: impl AsRef<Path>) -> Result<VideoFrames> {
        let path = path.as_ref();
        let (info, demuxer) = self.probe_format(path)?;
        let frame_bytes = info.width * info.height * CHANNELS;
        let mut decoder = self.spawn_decoder(path, &demuxer, frame_bytes, None)?;
        let mut pixels = Vec::new();
        let mut frames = 0;
        while let Some(frame) = decoder.next(path)? {
            if frames >= self.limits.max_video_frames {
                return Err(Error::out_of_range(
                    format!("frames of {}", path.display()),
                    format!("more than {frames}"),
                    format!("at most {}", self.limits.max_video_frames),
                ));
            }
            pixels.extend_from_slice(&frame);
            frames += 1;
        }
        self.finish(decoder, path)?;
        if frames == 0 {
            return Err(Error::ExternalTool {
                tool: tool_name(&self.ffmpeg),
                message: format!("{} decoded to no frames", path.display()),
            });
        }
        VideoFrames::new(
            pixels,
            [frames, info.height, info.width, CHANNELS],
            info.fps,
        )
    }

    /// The reference's `read_video` on a file, for several streams at once (the CLIP and
    /// Synchformer streams of a request): only the selected frames are decoded to RGB, and
    /// each is resized once per output size as it arrives.
    pub fn sample<const K: usize>(
        &self,
        path: impl AsRef<Path>,
        samplings: [FrameSampling; K],
    ) -> Result<[SampledFrames; K]> {
        let path = path.as_ref();
        let (info, demuxer) = self.probe_format(path)?;
        let mut wanted = BTreeSet::new();
        let mut candidates = Vec::with_capacity(K);
        for s in &samplings {
            let ids: Vec<usize> = s.candidate_ids(info.fps)?.collect();
            wanted.extend(ids.iter().copied());
            candidates.push(ids);
        }
        let wanted: Vec<usize> = wanted.into_iter().collect();
        let select = select_filter(&merge_progressions(
            candidates.iter().filter_map(|ids| progression(ids)),
        ));
        let resizers = samplings
            .iter()
            .map(|s| Resizer::new(info.height, info.width, s.size))
            .collect::<Result<Vec<_>>>()?;

        let frame_bytes = info.width * info.height * CHANNELS;
        let mut decoder =
            self.spawn_decoder(path, &demuxer, frame_bytes, Some((&select, wanted.len())))?;
        let mut resized = ResizedFrames::default();
        let mut received = 0usize;
        {
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(DECODE_BATCH);
            loop {
                let frame = decoder.next(path)?;
                let more = frame.is_some();
                if let Some(frame) = frame {
                    batch.push(frame);
                }
                if batch.len() == DECODE_BATCH || (!more && !batch.is_empty()) {
                    // The k-th frame ffmpeg sends is the k-th wanted id that exists (ffmpeg stops
                    // after `wanted.len()` frames; more would be a broken promise).
                    let Some(ids) = wanted.get(received..received + batch.len()) else {
                        return Err(Error::ExternalTool {
                            tool: tool_name(&self.ffmpeg),
                            message: format!("{} sent more frames than selected", path.display()),
                        });
                    };
                    let views: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    for ((s, cands), resizer) in samplings.iter().zip(&candidates).zip(&resizers) {
                        let (todo, views): (Vec<usize>, Vec<&[u8]>) = ids
                            .iter()
                            .zip(&views)
                            .filter(|(id, _)| {
                                cands.binary_search(id).is_ok() && !resized.contains(**id, s.size)
                            })
                            .map(|(id, v)| (*id, *v))
                            .unzip();
                        for (id, out) in todo.into_iter().zip(resizer.resize_many_u8(&views)?) {
                            resized.insert(id, s.size, out);
                        }
                    }
                    received += batch.len();
                    batch.clear();
                }
                if !more || received == wanted.len() {
                    break;
                }
            }
        }
        self.finish(decoder, path)?;

        // The frames below the last one received exist; those above do not.
        let Some(last) = received.checked_sub(1).map(|i| wanted[i]) else {
            return Err(Error::InvalidRequest(format!(
                "{}: no frame to read (the video ends before the requested start)",
                path.display()
            )));
        };
        let present = last + 1;
        let streams = samplings
            .iter()
            .map(|s| {
                let selected = s.selected_ids(info.fps, present)?;
                Ok(resized.assemble(s, &selected))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(streams
            .try_into()
            .unwrap_or_else(|_| unreachable!("one stream per sampling")))
    }

    /// Starts ffmpeg writing RGB24 frames of the first video stream to its stdout, optionally
    /// through a `select` filter stopping after `count` frames.
    fn spawn_decoder(
        &self,
        path: &Path,
        demuxer: &str,
        frame_bytes: usize,
        select: Option<(&str, usize)>,
    ) -> Result<Decoder> {
        let deadline = Instant::now() + self.limits.ffmpeg_timeout;
        let mut cmd = Command::new(&self.ffmpeg);
        cmd.args(["-v", "error", "-nostdin", "-noautorotate"])
            .args(["-protocol_whitelist", "file,pipe", "-f", demuxer, "-i"])
            .arg(file_url(path))
            .args(["-map", "0:v:0"]);
        if let Some((filter, count)) = select {
            cmd.arg("-vf")
                .arg(filter)
                .arg("-frames:v")
                .arg(count.to_string());
        }
        // Every decoded (or selected) frame exactly once: no duplication or dropping to a
        // constant rate.
        cmd.args(self.passthrough_args())
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| spawn_error(&self.ffmpeg, e))?;
        let mut guard = ChildGuard(Some(child));
        // ffmpeg's messages are collected on the side so that a chatty decoder never blocks
        // on a full stderr pipe while we read frames.
        let messages = capture(guard.child().stderr.take());
        // Frames are read on a thread and handed over through a small bounded channel, so the
        // reader here can wait with a time limit and a cancellation check.
        let mut stdout = guard.child().stdout.take();
        let (send, frames) = sync_channel::<std::io::Result<Vec<u8>>>(2);
        std::thread::spawn(move || {
            let Some(stdout) = stdout.as_mut() else {
                return;
            };
            loop {
                let mut frame = vec![0u8; frame_bytes];
                match read_frame(stdout, &mut frame) {
                    Ok(true) => {
                        if send.send(Ok(frame)).is_err() {
                            return;
                        }
                    }
                    Ok(false) => return,
                    Err(e) => {
                        let _ = send.send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(Decoder {
            guard,
            frames,
            messages,
            tool: self.ffmpeg.clone(),
            deadline,
            cancel: self.cancel.clone(),
        })
    }

    /// The option that passes frames through without rate conversion: `-fps_mode` since
    /// FFmpeg 5.1, `-vsync` before (deprecated since).
    fn passthrough_args(&self) -> [&'static str; 2] {
        if knows_fps_mode(&self.ffmpeg, self.limits.ffmpeg_timeout) {
            ["-fps_mode", "passthrough"]
        } else {
            ["-vsync", "passthrough"]
        }
    }

    /// Waits for a decoder and turns a failure into an error with ffmpeg's message.
    fn finish(&self, mut decoder: Decoder, path: &Path) -> Result<()> {
        // Drain what is left so that ffmpeg is not blocked on a full pipe.
        while decoder.next(path)?.is_some() {}
        let Decoder {
            guard,
            messages,
            deadline,
            cancel,
            ..
        } = decoder;
        let status = guard.wait(&self.ffmpeg, deadline, cancel.as_ref())?;
        let stderr = messages.join().unwrap_or_default();
        if !status.success() {
            return Err(failure(
                &self.ffmpeg,
                &format!("cannot decode {}", path.display()),
                &stderr,
            ));
        }
        Ok(())
    }

    /// Puts `audio` (a WAV file) under the video of `video`: video stream copied, audio encoded
    /// to AAC, cut to the shorter of the two (`generate --mux`).
    pub fn mux(
        &self,
        video: impl AsRef<Path>,
        audio: impl AsRef<Path>,
        out: impl AsRef<Path>,
    ) -> Result<()> {
        self.mux_segment(video, audio, out, None)
    }

    /// [`Ffmpeg::mux`] on `duration` seconds of the video from `start` (the span the audio was
    /// generated for), as the reference's `merge_video_audio`; the cut falls on the video's
    /// key frames since the stream is copied.
    pub fn mux_segment(
        &self,
        video: impl AsRef<Path>,
        audio: impl AsRef<Path>,
        out: impl AsRef<Path>,
        span: Option<(f64, f64)>,
    ) -> Result<()> {
        let (video, audio, out) = (video.as_ref(), audio.as_ref(), out.as_ref());
        check_mux_target(&[video, audio], out)?;
        // Written next to the target under a temporary name, then renamed: a failed mux
        // leaves nothing, and `-n` never overwrites anything.
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = out.with_file_name(format!(".audiox-partial-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let mut cmd = Command::new(&self.ffmpeg);
        cmd.args(["-v", "error", "-nostdin", "-n"]);
        if let Some((start, duration)) = span {
            if !(start.is_finite() && start >= 0.0 && duration.is_finite() && duration > 0.0) {
                return Err(Error::InvalidRequest(format!(
                    "mux span from {start} s for {duration} s"
                )));
            }
            cmd.args(["-ss", &start.to_string(), "-t", &duration.to_string()]);
        }
        let whitelist = ["-protocol_whitelist", "file,pipe", "-i"];
        cmd.args(whitelist)
            .arg(file_url(video))
            .args(whitelist)
            .arg(file_url(audio))
            .args([
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-map",
                "0:v:0",
                "-map",
                "1:a:0",
                "-shortest",
            ]);
        cmd.arg(file_url(&partial));
        let args: Vec<OsString> = cmd.get_args().map(OsStr::to_os_string).collect();
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let result = self.run(&self.ffmpeg, &args).and_then(|output| {
            if output.status.success() {
                std::fs::rename(&partial, out).map_err(|e| Error::io(out, e))
            } else {
                Err(failure(
                    &self.ffmpeg,
                    &format!("cannot mux {} and {}", video.display(), audio.display()),
                    &output.stderr,
                ))
            }
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }
}

/// Longest `select` expression given to one decoder. Windows past it are read by a further
/// decoder (from the start of the file again): far above what a long-form request needs (about
/// 50 bytes per window and stream), it only keeps a command line of bounded size.
const MAX_SELECT_BYTES: usize = 64 * 1024;

/// The frames of a sequence of windows of one video file ([`Ffmpeg::sample_windows`]): one
/// ffmpeg process decodes the file once and sends the frames any window selects, in order;
/// each window takes its frames as they arrive and the frames a later window still needs
/// (windows overlap) are kept, resized, until that window is read. The frames held are about
/// one window's, whatever the number of windows.
///
/// Each window is exactly what [`Ffmpeg::sample`] returns for its samplings (same frame
/// numbers, same padding when the video ends inside it, same error when it starts past the
/// end). The decoder has the bounds of [`Ffmpeg`]: its time limit counts only the time spent
/// waiting for its frames (not the time between windows), the cancellation check
/// ([`WindowedFrames::set_cancel`]) is polled while frames are awaited, and the child is
/// killed and waited for when an error occurs or the value is dropped.
///
/// ```no_run
/// use audiox_encoders::frames::FrameSampling;
/// use audiox_encoders::video_file::Ffmpeg;
/// // Three overlapping 10 s windows, 7.5 s apart, each read at 5 and 25 fps.
/// let windows: Vec<[FrameSampling; 2]> = (0..3)
///     .map(|k| {
///         let start = 7.5 * k as f64;
///         [
///             FrameSampling::new(5.0, 10.0, 224).with_seek(start),
///             FrameSampling::new(25.0, 10.0, 224).with_seek(start),
///         ]
///     })
///     .collect();
/// for window in Ffmpeg::new().sample_windows("clip.mp4", windows)? {
///     let [clip, sync] = window?;
///     println!("{} and {} frames", clip.len(), sync.len());
/// }
/// # Ok::<(), audiox_core::Error>(())
/// ```
pub struct WindowedFrames<const K: usize> {
    ffmpeg: Ffmpeg,
    path: PathBuf,
    info: VideoInfo,
    demuxer: String,
    windows: Vec<[FrameSampling; K]>,
    /// Candidate ids of every window and sampling (sorted).
    candidates: Vec<[Vec<usize>; K]>,
    /// Smallest and largest candidate id of every window.
    spans: Vec<(usize, usize)>,
    /// The windows each decoder serves, in order.
    groups: Vec<std::ops::Range<usize>>,
    /// Next window to return.
    next: usize,
    /// The decoder of `groups[group]`, while it runs.
    decoder: Option<Decoder>,
    group: Option<usize>,
    /// Ids the current decoder selects, in order, and how many have arrived.
    wanted: Vec<usize>,
    received: usize,
    /// The current decoder has sent its last frame.
    ended: bool,
    /// Time the current decoder may still be waited for.
    budget: Duration,
    resized: ResizedFrames,
    resizers: HashMap<usize, Resizer>,
    failed: bool,
}

impl<const K: usize> std::fmt::Debug for WindowedFrames<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedFrames")
            .field("path", &self.path)
            .field("windows", &self.windows.len())
            .field("next", &self.next)
            .field("held_frames", &self.resized.len())
            .finish_non_exhaustive()
    }
}

impl Ffmpeg {
    /// Reads the frames of consecutive windows of `path` (each window one set of samplings, as
    /// [`Ffmpeg::sample`] takes) with one decoder: see [`WindowedFrames`]. The windows must
    /// advance: neither the first nor the last frame a window may select comes before the
    /// previous window's. Nothing is decoded until the first window is asked for.
    pub fn sample_windows<const K: usize>(
        &self,
        path: impl AsRef<Path>,
        windows: Vec<[FrameSampling; K]>,
    ) -> Result<WindowedFrames<K>> {
        self.sample_windows_within(path.as_ref(), windows, MAX_SELECT_BYTES)
    }

    /// [`Ffmpeg::sample_windows`] with at most `max_select` bytes of `select` expression per
    /// decoder.
    fn sample_windows_within<const K: usize>(
        &self,
        path: &Path,
        windows: Vec<[FrameSampling; K]>,
        max_select: usize,
    ) -> Result<WindowedFrames<K>> {
        let (info, demuxer) = self.probe_format(path)?;
        let mut candidates = Vec::with_capacity(windows.len());
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(windows.len());
        let mut resizers = HashMap::new();
        for (k, samplings) in windows.iter().enumerate() {
            let ids: [Vec<usize>; K] = samplings
                .iter()
                .map(|s| Ok(s.candidate_ids(info.fps)?.collect()))
                .collect::<Result<Vec<Vec<usize>>>>()?
                .try_into()
                .unwrap_or_else(|_| unreachable!("one list per sampling"));
            let first = ids.iter().filter_map(|i| i.first()).min().copied();
            let last = ids.iter().filter_map(|i| i.last()).max().copied();
            let (Some(first), Some(last)) = (first, last) else {
                return Err(Error::InvalidRequest(format!(
                    "window {k} of {} selects no frame",
                    path.display()
                )));
            };
            if let Some(&(prev_first, prev_last)) = spans.last()
                && (first < prev_first || last < prev_last)
            {
                return Err(Error::InvalidRequest(format!(
                    "window {k} of {} reads frames {first}..={last}, before window {}'s \
                     {prev_first}..={prev_last}: the windows must advance",
                    path.display(),
                    k - 1
                )));
            }
            for s in samplings {
                if let std::collections::hash_map::Entry::Vacant(e) = resizers.entry(s.size) {
                    e.insert(Resizer::new(info.height, info.width, s.size)?);
                }
            }
            spans.push((first, last));
            candidates.push(ids);
        }
        // Windows per decoder: as many as fit in one `select` expression.
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        let mut bytes = 0;
        for (k, ids) in candidates.iter().enumerate() {
            let window_bytes: usize = ids
                .iter()
                .filter_map(|i| progression(i))
                .map(|p| select_term(p).len() + 1)
                .sum();
            match groups.last_mut() {
                Some(g) if bytes + window_bytes <= max_select => {
                    g.end = k + 1;
                    bytes += window_bytes;
                }
                _ => {
                    groups.push(k..k + 1);
                    bytes = window_bytes;
                }
            }
        }
        Ok(WindowedFrames {
            ffmpeg: self.clone(),
            path: path.to_path_buf(),
            info,
            demuxer,
            windows,
            candidates,
            spans,
            groups,
            next: 0,
            decoder: None,
            group: None,
            wanted: Vec::new(),
            received: 0,
            ended: false,
            budget: self.limits.ffmpeg_timeout,
            resized: ResizedFrames::default(),
            resizers,
            failed: false,
        })
    }
}

impl<const K: usize> WindowedFrames<K> {
    /// Number of windows.
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    /// What ffprobe reports about the video.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Replaces the cancellation check polled while frames are awaited (`None`: no check);
    /// when it returns true the child is killed and the read returns [`Error::Cancelled`].
    pub fn set_cancel(&mut self, cancel: Option<CancelCheck>) {
        self.ffmpeg.cancel = cancel.clone();
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.cancel = cancel;
        }
    }

    /// Resized frames held for the next windows (one per frame and size): at most about one
    /// window's, whatever the number of windows.
    pub fn held_frames(&self) -> usize {
        self.resized.len()
    }

    /// The frames of the next window; `None` after the last one, or after an error (the
    /// decoder is stopped then).
    pub fn next_window(&mut self) -> Option<Result<[SampledFrames; K]>> {
        if self.failed || self.next >= self.windows.len() {
            return None;
        }
        let result = self.read_window();
        if result.is_err() {
            self.failed = true;
            // Killed and waited for.
            self.decoder = None;
            self.resized = ResizedFrames::default();
        }
        Some(result)
    }

    fn read_window(&mut self) -> Result<[SampledFrames; K]> {
        let k = self.next;
        let group = self
            .groups
            .iter()
            .position(|g| g.contains(&k))
            .expect("every window is in a group");
        if self.group != Some(group) {
            self.start_group(group)?;
        }
        let (_, need) = self.spans[k];
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.deadline = Instant::now() + self.budget;
        }
        let mut batch: Vec<(usize, Vec<u8>)> = Vec::with_capacity(DECODE_BATCH);
        while !self.ended && self.received < self.wanted.len() && self.wanted[self.received] <= need
        {
            let decoder = self.decoder.as_mut().expect("a running decoder");
            match decoder.next(&self.path)? {
                Some(frame) => {
                    batch.push((self.wanted[self.received], frame));
                    self.received += 1;
                    if batch.len() == DECODE_BATCH {
                        self.resize(k, &mut batch)?;
                    }
                }
                None => self.ended = true,
            }
        }
        self.resize(k, &mut batch)?;
        if self.ended || self.received == self.wanted.len() {
            if let Some(decoder) = self.decoder.take() {
                self.ffmpeg.finish(decoder, &self.path)?;
            }
        } else if let Some(decoder) = &self.decoder {
            self.budget = decoder.deadline.saturating_duration_since(Instant::now());
        }

        // The frames up to the last one received exist; past it, when the decoder has ended,
        // none do.
        let present = match self.received.checked_sub(1).map(|i| self.wanted[i]) {
            Some(last) if self.ended => last + 1,
            Some(last) => (last + 1).max(need + 1),
            None => 0,
        };
        if present <= self.spans[k].0 {
            return Err(Error::InvalidRequest(format!(
                "{}: no frame to read (the video ends before the requested start)",
                self.path.display()
            )));
        }
        let streams = self.windows[k]
            .iter()
            .map(|s| {
                let selected = s.selected_ids(self.info.fps, present)?;
                Ok(self.resized.assemble(s, &selected))
            })
            .collect::<Result<Vec<_>>>()?;
        self.next += 1;
        // Only what a later window reads stays.
        let (candidates, spans, windows, next) =
            (&self.candidates, &self.spans, &self.windows, self.next);
        self.resized
            .retain(|id, size| needed_later(candidates, spans, windows, next, id, size));
        Ok(streams
            .try_into()
            .unwrap_or_else(|_| unreachable!("one stream per sampling")))
    }

    /// Starts the decoder of `groups[group]` (stopping the previous one).
    fn start_group(&mut self, group: usize) -> Result<()> {
        self.decoder = None;
        let windows = self.groups[group].clone();
        let mut wanted = BTreeSet::new();
        for ids in &self.candidates[windows.clone()] {
            for list in ids {
                wanted.extend(list.iter().copied());
            }
        }
        self.wanted = wanted.into_iter().collect();
        let select = select_filter(&merge_progressions(
            self.candidates[windows]
                .iter()
                .flat_map(|ids| ids.iter().filter_map(|i| progression(i))),
        ));
        let frame_bytes = self.info.width * self.info.height * CHANNELS;
        self.received = 0;
        self.ended = false;
        self.budget = self.ffmpeg.limits.ffmpeg_timeout;
        self.group = Some(group);
        self.decoder = Some(self.ffmpeg.spawn_decoder(
            &self.path,
            &self.demuxer,
            frame_bytes,
            Some((&select, self.wanted.len())),
        )?);
        Ok(())
    }

    /// Resizes the frames of `batch` (ids and full-size frames) to every size a window from
    /// `k` on reads them at, once per size, and empties it.
    fn resize(&mut self, k: usize, batch: &mut Vec<(usize, Vec<u8>)>) -> Result<()> {
        let mut sizes: Vec<usize> = self.resizers.keys().copied().collect();
        sizes.sort_unstable();
        for size in sizes {
            let (ids, views): (Vec<usize>, Vec<&[u8]>) = batch
                .iter()
                .filter(|(id, _)| {
                    !self.resized.contains(*id, size)
                        && needed_later(&self.candidates, &self.spans, &self.windows, k, *id, size)
                })
                .map(|(id, frame)| (*id, frame.as_slice()))
                .unzip();
            if ids.is_empty() {
                continue;
            }
            let out = self.resizers[&size].resize_many_u8(&views)?;
            for (id, frame) in ids.into_iter().zip(out) {
                self.resized.insert(id, size, frame);
            }
        }
        batch.clear();
        Ok(())
    }
}

/// Whether a window from `from` on reads frame `id` at `size` (windows advance, so the search
/// stops at the first window starting after `id`).
fn needed_later<const K: usize>(
    candidates: &[[Vec<usize>; K]],
    spans: &[(usize, usize)],
    windows: &[[FrameSampling; K]],
    from: usize,
    id: usize,
    size: usize,
) -> bool {
    (from..windows.len())
        .take_while(|&j| spans[j].0 <= id)
        .any(|j| {
            windows[j]
                .iter()
                .zip(&candidates[j])
                .any(|(s, ids)| s.size == size && ids.binary_search(&id).is_ok())
        })
}

impl<const K: usize> Iterator for WindowedFrames<K> {
    type Item = Result<[SampledFrames; K]>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_window()
    }
}

/// Checks a mux target before ffmpeg runs: a file name (not an option: no leading `-`), in an
/// existing folder, and none of `inputs` (compared as canonical paths, so `./a.mp4`, `a.mp4`,
/// a symbolic link or a hard link to an input are all refused).
pub fn check_mux_target(inputs: &[&Path], out: &Path) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::InvalidRequest(format!(
            "mux target {}: {why}",
            out.display()
        )))
    };
    if out.as_os_str().is_empty() || out.file_name().is_none() {
        return refuse("not a file name");
    }
    if out.as_os_str().to_string_lossy().starts_with('-') {
        return refuse("a name starting with `-` (write ./-name for such a file)");
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent).map_err(|e| Error::io(parent, e))?;
    let target = match std::fs::canonicalize(out) {
        Ok(p) => p,
        Err(_) => parent.join(out.file_name().unwrap_or_default()),
    };
    for input in inputs {
        existing_file(input)?;
        let canonical = std::fs::canonicalize(input).map_err(|e| Error::io(input, e))?;
        if canonical == target || same_file(input, out) {
            return refuse(&format!("it is the input {}", input.display()));
        }
    }
    Ok(())
}

/// Whether two existing paths are the same file (same device and inode on Unix).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    let _ = (a, b);
    false
}

/// A running ffmpeg decoder: the child (killed and waited for if dropped), its frames arriving
/// from a reader thread, and the thread collecting its messages.
struct Decoder {
    guard: ChildGuard,
    frames: Receiver<std::io::Result<Vec<u8>>>,
    messages: std::thread::JoinHandle<Vec<u8>>,
    tool: PathBuf,
    deadline: Instant,
    cancel: Option<CancelCheck>,
}

impl Decoder {
    /// The next frame; `None` at the end of the stream. Waits at most until the call's time
    /// limit, polling the cancellation check.
    fn next(&mut self, path: &Path) -> Result<Option<Vec<u8>>> {
        loop {
            check_deadline(&self.tool, self.deadline, self.cancel.as_ref())?;
            let wait = POLL.min(self.deadline.saturating_duration_since(Instant::now()));
            match self.frames.recv_timeout(wait) {
                Ok(Ok(frame)) => return Ok(Some(frame)),
                Ok(Err(e)) => return Err(Error::io(path, e)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

/// Fills `frame` from `r`: `Ok(false)` at a clean end of stream, an error for a partial frame.
fn read_frame(r: &mut impl Read, frame: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < frame.len() {
        match r.read(&mut frame[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "ffmpeg stopped in the middle of a frame ({filled} of {} bytes)",
                        frame.len()
                    ),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// An arithmetic progression of frame numbers: first, last, step.
type Progression = (usize, usize, usize);

/// The progression of a sampling's candidate ids (`None` when there are none).
fn progression(ids: &[usize]) -> Option<Progression> {
    let (first, last) = (*ids.first()?, *ids.last()?);
    let step = ids.get(1).map_or(1, |second| second - first);
    Some((first, last, step))
}

/// Joins progressions with the same step and residue that overlap or touch (the samplings of
/// overlapping windows), keeping the order of the others: the union of the frames is the same.
fn merge_progressions(progressions: impl IntoIterator<Item = Progression>) -> Vec<Progression> {
    let mut out: Vec<Progression> = Vec::new();
    let mut latest: HashMap<(usize, usize), usize> = HashMap::new();
    for (first, last, step) in progressions {
        let key = (step, first % step);
        if let Some(&i) = latest.get(&key) {
            let term = &mut out[i];
            if first <= term.1 + step && last + step >= term.0 {
                term.0 = term.0.min(first);
                term.1 = term.1.max(last);
                continue;
            }
        }
        latest.insert(key, out.len());
        out.push((first, last, step));
    }
    out
}

/// The `select` expression term of one progression.
fn select_term((first, last, step): Progression) -> String {
    format!("between(n,{first},{last})*not(mod(n-{first},{step}))")
}

/// An ffmpeg `select` filter passing the frames of every progression.
fn select_filter(progressions: &[Progression]) -> String {
    let terms: Vec<String> = progressions.iter().map(|&p| select_term(p)).collect();
    format!("select='{}'", terms.join("+"))
}

/// [`Ffmpeg::probe`] with the programs on the `PATH`.
pub fn probe(path: impl AsRef<Path>) -> Result<VideoInfo> {
    Ffmpeg::new().probe(path)
}

/// [`Ffmpeg::decode`] with the programs on the `PATH`.
pub fn decode(path: impl AsRef<Path>) -> Result<VideoFrames> {
    Ffmpeg::new().decode(path)
}

/// [`Ffmpeg::sample`] with the programs on the `PATH`.
pub fn sample<const K: usize>(
    path: impl AsRef<Path>,
    samplings: [FrameSampling; K],
) -> Result<[SampledFrames; K]> {
    Ffmpeg::new().sample(path, samplings)
}

/// [`Ffmpeg::mux`] with the programs on the `PATH`.
pub fn mux(video: impl AsRef<Path>, audio: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<()> {
    Ffmpeg::new().mux(video, audio, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates_parse_like_ffprobe_writes_them() {
        assert_eq!(parse_rate("30/1"), Some(30.0));
        assert!((parse_rate("30000/1001").unwrap() - 29.97003).abs() < 1e-5);
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("25"), Some(25.0));
        assert_eq!(parse_rate("x"), None);
    }

    #[test]
    fn the_select_filter_lists_each_progression() {
        let a = FrameSampling::new(5.0, 1.0, 8);
        let b = FrameSampling::new(25.0, 1.0, 8).with_seek(0.5);
        let ca: Vec<usize> = a.candidate_ids(30.0).unwrap().collect();
        let cb: Vec<usize> = b.candidate_ids(30.0).unwrap().collect();
        let progressions = merge_progressions([&ca, &cb].map(|ids| progression(ids).unwrap()));
        assert_eq!(
            select_filter(&progressions),
            "select='between(n,0,24)*not(mod(n-0,6))+between(n,15,63)*not(mod(n-15,2))'"
        );
    }

    /// ffmpeg and a folder holding `c.mkv`, a lossless 4 s 30 fps 40x30 test clip; `None`
    /// (the test is skipped, with a notice) where ffmpeg is not on the PATH.
    fn four_second_test_clip() -> Option<(Ffmpeg, tempfile::TempDir)> {
        let ffmpeg = Ffmpeg::new();
        if ffmpeg.check().is_err() {
            eprintln!("NOTICE: ffmpeg not found on the PATH; test skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=size=40x30:rate=30:duration=4")
            .args(["-c:v", "ffv1"])
            .arg(dir.path().join("c.mkv"))
            .status()
            .unwrap();
        assert!(made.success());
        Some((ffmpeg, dir))
    }

    /// Windows split over several decoders (a `select` expression limit of one window) give
    /// what one decoder per window gives.
    #[test]
    fn windows_split_over_decoders_are_the_same_windows() {
        let Some((ffmpeg, dir)) = four_second_test_clip() else {
            return;
        };
        let clip = dir.path().join("c.mkv");
        let windows: Vec<[FrameSampling; 2]> = (0..4)
            .map(|k| {
                let start = k as f64 * 0.9;
                [
                    FrameSampling::new(5.0, 1.5, 16).with_seek(start),
                    FrameSampling::new(25.0, 1.5, 8).with_seek(start),
                ]
            })
            .collect();
        let split = ffmpeg
            .sample_windows_within(&clip, windows.clone(), 1)
            .unwrap();
        assert_eq!(split.groups.len(), windows.len());
        let whole = ffmpeg.sample_windows(&clip, windows.clone()).unwrap();
        assert_eq!(whole.groups.len(), 1);
        for ((a, b), samplings) in split.zip(whole).zip(&windows) {
            let one = ffmpeg.sample(&clip, *samplings).unwrap();
            assert_eq!(a.unwrap(), one);
            assert_eq!(b.unwrap(), one);
        }
    }

    /// The time limit counts the time spent waiting for frames, not the time between windows;
    /// past it the decoder is stopped with a time-limit error.
    #[test]
    fn the_time_limit_counts_only_the_wait_for_frames() {
        let Some((ffmpeg, dir)) = four_second_test_clip() else {
            return;
        };
        let clip = dir.path().join("c.mkv");
        let windows: Vec<[FrameSampling; 1]> = (0..3)
            .map(|k| [FrameSampling::new(25.0, 1.5, 8).with_seek(k as f64)])
            .collect();
        let limit = Duration::from_secs(5);
        let mut stream = ffmpeg
            .clone()
            .with_timeout(limit)
            .sample_windows(&clip, windows.clone())
            .unwrap();
        stream.next().unwrap().unwrap();
        // Longer than the limit between two windows: not counted.
        std::thread::sleep(limit + Duration::from_millis(500));
        stream.next().unwrap().unwrap();

        let mut stream = ffmpeg.sample_windows(&clip, windows).unwrap();
        stream.ffmpeg.limits.ffmpeg_timeout = Duration::ZERO;
        match stream.next() {
            Some(Err(Error::ExternalTool { message, .. })) => {
                assert!(message.contains("time limit"), "{message}")
            }
            other => panic!("expected a time-limit error, got {other:?}"),
        }
        assert!(stream.decoder.is_none(), "the decoder is stopped");
        assert!(stream.next().is_none());
    }

    #[test]
    fn merged_progressions_select_the_same_frames() {
        let select = |ps: &[Progression], n: usize| {
            ps.iter()
                .any(|&(f, l, s)| (f..=l).contains(&n) && (n - f).is_multiple_of(s))
        };
        let inputs: Vec<Progression> = vec![
            (0, 45, 5),
            (37, 82, 5),   // another residue: kept apart
            (40, 85, 5),   // overlaps the first: joined
            (90, 135, 5),  // touches it (85 + 5): joined
            (150, 160, 5), // a gap: apart
            (0, 249, 1),
            (187, 436, 1), // step 1 overlapping: joined
            (7, 7, 1),     // inside: joined
        ];
        let merged = merge_progressions(inputs.clone());
        assert_eq!(
            merged,
            vec![(0, 135, 5), (37, 82, 5), (150, 160, 5), (0, 436, 1)]
        );
        for n in 0..500 {
            assert_eq!(select(&inputs, n), select(&merged, n), "frame {n}");
        }
    }
}
