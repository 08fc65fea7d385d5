//! Video files through the `ffmpeg` and `ffprobe` programs (crate feature `video`).
//!
//! `ffprobe` reports the first video stream's size and average frame rate; `ffmpeg` decodes it
//! to raw RGB24 frames on a pipe. Only the frames a [`FrameSampling`] selects are sent (an
//! ffmpeg `select` filter on the frame number) and each is resized as it arrives, so a long or
//! large video never sits in memory whole. The selection is the reference's
//! ([`FrameSampling`]); frame numbers count decoded frames from the start of the stream, and
//! rotation metadata is ignored, as the reference's decoder (decord) does. [`mux`] puts
//! generated audio under a video.
//!
//! Errors: a missing input file is [`Error::Io`]; a missing program, a file ffmpeg cannot read
//! or one without a video stream is [`Error::ExternalTool`] with ffmpeg's own message.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use audiox_core::{Error, Result};

use crate::frames::{CHANNELS, FrameSampling, ResizedFrames, Resizer, SampledFrames, VideoFrames};

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

/// The two FFmpeg programs.
#[derive(Debug, Clone)]
pub struct Ffmpeg {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    /// Whether ffmpeg knows `-fps_mode` (5.1 and later), found on first use.
    fps_mode: OnceLock<bool>,
}

impl Default for Ffmpeg {
    fn default() -> Self {
        Self::with_programs("ffmpeg", "ffprobe")
    }
}

/// Runs a program to completion, capturing its output.
fn run(tool: &Path, args: &[&std::ffi::OsStr]) -> Result<std::process::Output> {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(tool, e))
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
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
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
            fps_mode: OnceLock::new(),
        }
    }

    /// Checks that both programs run; the error says how to get them.
    pub fn check(&self) -> Result<()> {
        for tool in [&self.ffmpeg, &self.ffprobe] {
            let out = run(tool, &["-version".as_ref()])?;
            if !out.status.success() {
                return Err(failure(tool, "`-version` failed", &out.stderr));
            }
        }
        Ok(())
    }

    /// Size and frame rate of the first video stream of `path`.
    pub fn probe(&self, path: impl AsRef<Path>) -> Result<VideoInfo> {
        let path = path.as_ref();
        existing_file(path)?;
        let args: [&std::ffi::OsStr; 10] = [
            "-v".as_ref(),
            "error".as_ref(),
            "-select_streams".as_ref(),
            "v:0".as_ref(),
            "-show_entries".as_ref(),
            "stream=width,height,avg_frame_rate,r_frame_rate,nb_frames:format=duration".as_ref(),
            "-of".as_ref(),
            "json".as_ref(),
            "--".as_ref(),
            path.as_os_str(),
        ];
        let out = run(&self.ffprobe, &args)?;
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
        };
        Ok(VideoInfo {
            width: size("width")?,
            height: size("height")?,
            fps,
            frame_count: number(stream.get("nb_frames")).map(|n| n as usize),
            duration_seconds: number(json.get("format").and_then(|f| f.get("duration"))),
        })
    }

    /// Every frame of `path` at its native size. Holds the whole video in memory (1920x1080
    /// is 6 MB a frame): for short clips; [`Ffmpeg::sample`] reads only what it needs.
    pub fn decode(&self, path: impl AsRef<Path>) -> Result<VideoFrames> {
        let path = path.as_ref();
        let info = self.probe(path)?;
        let frame_bytes = info.width * info.height * CHANNELS;
        let mut decoder = self.spawn_decoder(path, None)?;
        let mut pixels = Vec::new();
        let mut frames = 0;
        {
            let stdout = decoder.stdout();
            let mut frame = vec![0u8; frame_bytes];
            while read_frame(stdout, &mut frame).map_err(|e| Error::io(path, e))? {
                pixels.extend_from_slice(&frame);
                frames += 1;
            }
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
        let info = self.probe(path)?;
        let mut wanted = BTreeSet::new();
        let mut candidates = Vec::with_capacity(K);
        for s in &samplings {
            let ids: Vec<usize> = s.candidate_ids(info.fps)?.collect();
            wanted.extend(ids.iter().copied());
            candidates.push(ids);
        }
        let wanted: Vec<usize> = wanted.into_iter().collect();
        let select = select_filter(&samplings, &candidates);
        let resizers = samplings
            .iter()
            .map(|s| Resizer::new(info.height, info.width, s.size))
            .collect::<Result<Vec<_>>>()?;

        let frame_bytes = info.width * info.height * CHANNELS;
        let mut decoder = self.spawn_decoder(path, Some((&select, wanted.len())))?;
        let mut resized = ResizedFrames::default();
        let mut received = 0usize;
        {
            let stdout = decoder.stdout();
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(DECODE_BATCH);
            loop {
                let mut frame = vec![0u8; frame_bytes];
                let more = read_frame(stdout, &mut frame).map_err(|e| Error::io(path, e))?;
                if more {
                    batch.push(frame);
                }
                if batch.len() == DECODE_BATCH || (!more && !batch.is_empty()) {
                    // The k-th frame ffmpeg sends is the k-th wanted id that exists.
                    let ids = &wanted[received..received + batch.len()];
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
    fn spawn_decoder(&self, path: &Path, select: Option<(&str, usize)>) -> Result<Decoder> {
        let mut cmd = Command::new(&self.ffmpeg);
        cmd.args(["-v", "error", "-nostdin", "-noautorotate", "-i"])
            .arg(path)
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
        let mut child = cmd.spawn().map_err(|e| spawn_error(&self.ffmpeg, e))?;
        // ffmpeg's messages are collected on the side so that a chatty decoder never blocks
        // on a full stderr pipe while we read frames.
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let messages = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        Ok(Decoder { child, messages })
    }

    /// The option that passes frames through without rate conversion: `-fps_mode` since
    /// FFmpeg 5.1, `-vsync` before (deprecated since).
    fn passthrough_args(&self) -> [&'static str; 2] {
        let modern = *self.fps_mode.get_or_init(|| {
            let Ok(out) = run(&self.ffmpeg, &["-version".as_ref()]) else {
                return true;
            };
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
        });
        if modern {
            ["-fps_mode", "passthrough"]
        } else {
            ["-vsync", "passthrough"]
        }
    }

    /// Waits for a decoder and turns a failure into an error with ffmpeg's message.
    fn finish(&self, decoder: Decoder, path: &Path) -> Result<()> {
        let Decoder {
            mut child,
            messages,
        } = decoder;
        // Drain what is left so that ffmpeg is not blocked on a full pipe.
        if let Some(mut stdout) = child.stdout.take() {
            std::io::copy(&mut stdout, &mut std::io::sink()).map_err(|e| Error::io(path, e))?;
        }
        let status = child.wait().map_err(|e| Error::io(path, e))?;
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
        existing_file(video)?;
        existing_file(audio)?;
        if out == video || out == audio {
            return Err(Error::InvalidRequest(format!(
                "the muxed file {} would overwrite an input",
                out.display()
            )));
        }
        let mut cmd = Command::new(&self.ffmpeg);
        cmd.args(["-v", "error", "-nostdin", "-y"]);
        if let Some((start, duration)) = span {
            if !(start.is_finite() && start >= 0.0 && duration.is_finite() && duration > 0.0) {
                return Err(Error::InvalidRequest(format!(
                    "mux span from {start} s for {duration} s"
                )));
            }
            cmd.args(["-ss", &start.to_string(), "-t", &duration.to_string()]);
        }
        cmd.arg("-i").arg(video).arg("-i").arg(audio).args([
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
        let output = cmd
            .arg(out)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error(&self.ffmpeg, e))?;
        if !output.status.success() {
            return Err(failure(
                &self.ffmpeg,
                &format!("cannot mux {} and {}", video.display(), audio.display()),
                &output.stderr,
            ));
        }
        Ok(())
    }
}

/// A running ffmpeg decoder and the thread collecting its messages.
struct Decoder {
    child: Child,
    messages: std::thread::JoinHandle<Vec<u8>>,
}

impl Decoder {
    fn stdout(&mut self) -> &mut std::process::ChildStdout {
        self.child.stdout.as_mut().expect("stdout is piped")
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

/// An ffmpeg `select` filter passing the candidate frames of every sampling (each an
/// arithmetic progression of frame numbers `n`).
fn select_filter(samplings: &[FrameSampling], candidates: &[Vec<usize>]) -> String {
    let terms: Vec<String> = samplings
        .iter()
        .zip(candidates)
        .filter_map(|(_, ids)| {
            let (first, last) = (*ids.first()?, *ids.last()?);
            let step = ids.get(1).map_or(1, |second| second - first);
            Some(format!(
                "between(n,{first},{last})*not(mod(n-{first},{step}))"
            ))
        })
        .collect();
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
        assert_eq!(
            select_filter(&[a, b], &[ca, cb]),
            "select='between(n,0,24)*not(mod(n-0,6))+between(n,15,63)*not(mod(n-15,2))'"
        );
    }
}
