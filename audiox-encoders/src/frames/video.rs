//! Decoded RGB video as a host application or a decoder hands it over.

use super::{CHANNELS, FrameSampling, ResizedFrames, Resizer, SampledFrames, check_fps};
use audiox_core::{Error, Result};

/// Decoded RGB video: `[N, H, W, 3]` u8, row-major (frame, row, column, channel), plus the
/// average frame rate the container declares.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrames {
    pixels: Vec<u8>,
    len: usize,
    height: usize,
    width: usize,
    fps: f64,
}

impl VideoFrames {
    /// Frames from a `[N, H, W, C]` u8 buffer. `C` must be 3 (RGB: drop an alpha channel or
    /// expand grey frames first); `N`, `H`, `W` must be positive and `fps` a positive rate.
    pub fn new(pixels: Vec<u8>, shape: [usize; 4], fps: f64) -> Result<Self> {
        let [len, height, width, channels] = shape;
        let expected = "[N >= 1, H >= 1, W >= 1, 3] (RGB)";
        if channels != CHANNELS || len == 0 || height == 0 || width == 0 {
            return Err(Error::input_shape("video frames", expected, &shape));
        }
        let bytes = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if bytes != Some(pixels.len()) {
            return Err(Error::input_shape(
                "video frame buffer",
                match bytes {
                    Some(b) => format!("{b} bytes for {shape:?}"),
                    None => format!("a buffer for {shape:?}, whose size overflows"),
                },
                &[pixels.len()],
            ));
        }
        check_fps(fps, "the video's frame rate")?;
        Ok(VideoFrames {
            pixels,
            len,
            height,
            width,
            fps,
        })
    }

    /// Frames from separate RGB images, which must all have the same size.
    pub fn from_images(images: &[image::RgbImage], fps: f64) -> Result<Self> {
        let first = images
            .first()
            .ok_or_else(|| Error::input_shape("video frames", "at least one frame", &[0]))?;
        let (width, height) = first.dimensions();
        let mut pixels = Vec::with_capacity(images.len() * first.as_raw().len());
        for (i, img) in images.iter().enumerate() {
            if img.dimensions() != (width, height) {
                return Err(Error::input_shape(
                    format!("video frame {i}"),
                    format!("{height}x{width} like frame 0"),
                    &[img.height() as usize, img.width() as usize],
                ));
            }
            pixels.extend_from_slice(img.as_raw());
        }
        Self::new(
            pixels,
            [images.len(), height as usize, width as usize, CHANNELS],
            fps,
        )
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a video has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frame height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Frame width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Declared average frame rate.
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// The whole buffer, `[N, H, W, 3]`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.pixels
    }

    /// Frame `i` as `[H, W, 3]`.
    pub fn frame(&self, i: usize) -> Option<&[u8]> {
        let n = self.height * self.width * CHANNELS;
        self.pixels.get(i * n..(i + 1) * n)
    }

    /// The reference's `read_video` on these frames: selection, resize to `S x S`, padding.
    pub fn sample(&self, sampling: &FrameSampling) -> Result<SampledFrames> {
        let [frames] = self.sample_streams([*sampling])?;
        Ok(frames)
    }

    /// Several streams from the same video (the CLIP and Synchformer streams of a request);
    /// every source frame is resized once per output size, however many streams use it.
    pub fn sample_streams<const K: usize>(
        &self,
        samplings: [FrameSampling; K],
    ) -> Result<[SampledFrames; K]> {
        let mut selections = Vec::with_capacity(K);
        for s in &samplings {
            selections.push(s.selected_ids(self.fps, self.len)?);
        }
        let mut resized = ResizedFrames::default();
        for (s, ids) in samplings.iter().zip(&selections) {
            let resizer = Resizer::new(self.height, self.width, s.size)?;
            let todo: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&id| !resized.contains(id, s.size))
                .collect();
            let frames: Vec<&[u8]> = todo
                .iter()
                .map(|&id| {
                    self.frame(id)
                        .expect("selected ids are below the frame count")
                })
                .collect();
            for (id, out) in todo.iter().zip(resizer.resize_many_u8(&frames)?) {
                resized.insert(*id, s.size, out);
            }
        }
        let streams: Vec<SampledFrames> = samplings
            .iter()
            .zip(&selections)
            .map(|(s, ids)| resized.assemble(s, ids))
            .collect();
        Ok(streams
            .try_into()
            .unwrap_or_else(|_| unreachable!("one stream per sampling")))
    }
}
