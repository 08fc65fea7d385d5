//! The reference's frame selection (`read_video`) and the store of resized frames.

use std::collections::HashMap;

use super::{CHANNELS, Pixels, SampledFrames, check_fps};
use audiox_core::{Error, Result};

/// Which frames of a video an encoder sees, and at what size: the reference's `read_video`
/// with `seek_time`, `duration` and `target_fps`, resizing to `size x size`.
///
/// Selection: `seek = int(seek_seconds * fps)`, `step = ceil(fps / target_fps)` (decimation by
/// an integer step, not resampling: a 30 fps clip read at 25 fps takes every second frame), frames
/// `seek, seek + step, ...` below `min(seek + int(target_fps * duration) * step, N)`; then the
/// last selected frame is repeated up to `int(duration * target_fps)` frames.
///
/// The reference also accepts `duration = -1` ("all frames"), where its truncation drops the
/// last `target_fps` frames; nothing in this crate reads a video without a duration, so that
/// case is refused here (see `docs/video.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSampling {
    /// Output frames per second of video (5 for CLIP, 25 for Synchformer).
    pub target_fps: f64,
    /// Seconds of video wanted; the output has `int(duration_seconds * target_fps)` frames.
    pub duration_seconds: f64,
    /// Where reading starts, in seconds from the first frame.
    pub seek_seconds: f64,
    /// Side of the square output frames (224 for both encoders at full size).
    pub size: usize,
}

impl FrameSampling {
    /// `duration_seconds` of video from the start, at `target_fps`, resized to `size x size`.
    pub fn new(target_fps: f64, duration_seconds: f64, size: usize) -> Self {
        FrameSampling {
            target_fps,
            duration_seconds,
            seek_seconds: 0.0,
            size,
        }
    }

    /// Starts reading `seconds` into the video.
    pub fn with_seek(mut self, seconds: f64) -> Self {
        self.seek_seconds = seconds;
        self
    }

    /// Checks the numbers: positive rate, duration and size, a non-negative seek, and at
    /// least one output frame.
    pub fn validate(&self) -> Result<()> {
        check_fps(self.target_fps, "the target frame rate")?;
        if !(self.duration_seconds.is_finite() && self.duration_seconds > 0.0) {
            return Err(Error::InvalidRequest(format!(
                "the video duration must be positive seconds, got {}",
                self.duration_seconds
            )));
        }
        if !(self.seek_seconds.is_finite() && self.seek_seconds >= 0.0) {
            return Err(Error::InvalidRequest(format!(
                "the video start must be non-negative seconds, got {}",
                self.seek_seconds
            )));
        }
        if self.size == 0 {
            return Err(Error::InvalidRequest(
                "the frame size must be positive".into(),
            ));
        }
        if self.output_len() == 0 {
            return Err(Error::InvalidRequest(format!(
                "{} s at {} fps is less than one frame",
                self.duration_seconds, self.target_fps
            )));
        }
        Ok(())
    }

    /// Frames in the output: `int(duration * target_fps)`.
    pub fn output_len(&self) -> usize {
        (self.duration_seconds * self.target_fps) as usize
    }

    /// Decimation step for a source at `source_fps`: `ceil(source_fps / target_fps)`.
    pub fn step(&self, source_fps: f64) -> usize {
        // upstream: decimation by an integer step, not resampling (30 fps read at 25 fps takes
        // every second frame); the model was trained on frames picked this way.
        ((source_fps / self.target_fps).ceil() as usize).max(1)
    }

    /// First source frame: `int(seek_seconds * source_fps)`.
    pub fn seek_frame(&self, source_fps: f64) -> usize {
        (self.seek_seconds * source_fps) as usize
    }

    /// The frames the selection asks for before knowing the video's length (the selection is
    /// those below the frame count).
    pub fn candidate_ids(
        &self,
        source_fps: f64,
    ) -> Result<std::iter::StepBy<std::ops::Range<usize>>> {
        self.validate()?;
        check_fps(source_fps, "the video's frame rate")?;
        let step = self.step(source_fps);
        let start = self.seek_frame(source_fps);
        let wanted = (self.target_fps * self.duration_seconds) as usize;
        Ok((start..start + wanted * step).step_by(step))
    }

    /// Source frames selected from a video of `total_frames` frames at `source_fps`, before
    /// padding. Errors when the seek lies beyond the last frame.
    pub fn selected_ids(&self, source_fps: f64, total_frames: usize) -> Result<Vec<usize>> {
        let ids: Vec<usize> = self
            .candidate_ids(source_fps)?
            .take_while(|&id| id < total_frames)
            .collect();
        if ids.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "the video has {total_frames} frames at {source_fps} fps: nothing to read from {} s",
                self.seek_seconds
            )));
        }
        Ok(ids)
    }

    /// The source frame of every output frame: the selection, truncated or padded by repeating
    /// its last frame to [`FrameSampling::output_len`] frames.
    pub fn output_index(&self, selected: &[usize]) -> Vec<usize> {
        let n = self.output_len();
        let last = selected.last().copied().unwrap_or(0);
        (0..n)
            .map(|i| selected.get(i).copied().unwrap_or(last))
            .collect()
    }
}

/// Frames resized to square sizes, by source frame id and size (each `[3, S, S]` u8).
#[derive(Default)]
pub(crate) struct ResizedFrames {
    frames: HashMap<(usize, usize), Vec<u8>>,
}

impl ResizedFrames {
    pub(crate) fn contains(&self, id: usize, size: usize) -> bool {
        self.frames.contains_key(&(id, size))
    }

    pub(crate) fn insert(&mut self, id: usize, size: usize, frame: Vec<u8>) {
        self.frames.insert((id, size), frame);
    }

    /// Keeps only the frames `keep(id, size)` accepts.
    #[cfg_attr(not(feature = "video"), allow(dead_code))]
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(usize, usize) -> bool) {
        self.frames.retain(|&(id, size), _| keep(id, size));
    }

    /// Number of frames held (one per id and size).
    #[cfg_attr(not(feature = "video"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// The output of `sampling` whose selection is `selected` (every id must be present).
    pub(crate) fn assemble(&self, sampling: &FrameSampling, selected: &[usize]) -> SampledFrames {
        let index = sampling.output_index(selected);
        let plane = CHANNELS * sampling.size * sampling.size;
        let mut pixels = Vec::with_capacity(index.len() * plane);
        for id in &index {
            pixels.extend_from_slice(&self.frames[&(*id, sampling.size)]);
        }
        SampledFrames {
            pixels: Pixels::U8(pixels),
            source_index: index,
            size: sampling.size,
        }
    }
}
