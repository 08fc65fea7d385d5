//! Frames ready for the encoders, with the CLIP and Synchformer pre-processing.

use burn::tensor::{Device, Tensor, TensorData};

use super::CHANNELS;
use crate::clip::{CLIP_MEAN, CLIP_STD};
use audiox_core::{Error, Result};

/// Pixel storage of [`SampledFrames`].
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 0..255 values, as the reference's `read_video` returns for videos.
    U8(Vec<u8>),
    /// Float values in [0, 1]: the reference's still-image path ([`ImageScaling::Reference`](crate::frames::ImageScaling::Reference)).
    Unit(Vec<f32>),
}

/// Frames ready for the encoders: `[N, 3, S, S]` (frame, channel, row, column), with the source
/// frame each one came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledFrames {
    pub(super) pixels: Pixels,
    pub(super) source_index: Vec<usize>,
    pub(super) size: usize,
}

impl SampledFrames {
    /// Frames prepared elsewhere: `pixels` holds `[N, 3, size, size]` values, `source_index`
    /// one entry per frame (`N >= 1`).
    pub fn new(pixels: Pixels, size: usize, source_index: Vec<usize>) -> Result<Self> {
        let values = match &pixels {
            Pixels::U8(v) => v.len(),
            Pixels::Unit(v) => v.len(),
        };
        let n = source_index.len();
        let expected = [n, CHANNELS, size, size]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        if n == 0 || size == 0 || expected != Some(values) {
            return Err(Error::input_shape(
                "sampled frames",
                format!("[{n} >= 1, 3, {size}, {size}]"),
                &[values],
            ));
        }
        Ok(SampledFrames {
            pixels,
            source_index,
            size,
        })
    }

    /// Number of frames `N`.
    pub fn len(&self) -> usize {
        self.source_index.len()
    }

    /// Always false: a sampling has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.source_index.is_empty()
    }

    /// Side `S` of the square frames.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `[N, 3, S, S]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), CHANNELS, self.size, self.size]
    }

    /// The source frame of every output frame (0 for every frame of a still image).
    pub fn source_index(&self) -> &[usize] {
        &self.source_index
    }

    /// The pixel values.
    pub fn pixels(&self) -> &Pixels {
        &self.pixels
    }

    /// Whether every value is exactly zero (the video conditioner then uses its learned
    /// "no video" feature).
    pub fn is_all_zero(&self) -> bool {
        match &self.pixels {
            Pixels::U8(v) => v.iter().all(|&x| x == 0),
            Pixels::Unit(v) => v.iter().all(|&x| x == 0.0),
        }
    }

    /// The frames as the video conditioner receives them: `[N, 3, S, S]` float on the 0..255
    /// scale. upstream: frames from [`ImageScaling::Reference`](crate::frames::ImageScaling::Reference) keep their [0, 1] values here,
    /// which the conditioner's `/ 255` then darkens a second time.
    pub fn pixel_values(&self) -> Vec<f32> {
        match &self.pixels {
            Pixels::U8(v) => v.iter().map(|&x| x as f32).collect(),
            Pixels::Unit(v) => v.clone(),
        }
    }

    /// [`SampledFrames::pixel_values`] as a tensor `[N, 3, S, S]`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(self.pixel_values(), self.shape()), device)
    }

    /// The CLIP pre-processing of the video conditioner, `[N, 3, S, S]`: `x / 255.0`, then
    /// `(x - mean) / std` per channel, in float32.
    pub fn clip_pixel_values(&self) -> Vec<f32> {
        let plane = self.size * self.size;
        let mut out = self.pixel_values();
        for (i, v) in out.iter_mut().enumerate() {
            let c = (i / plane) % CHANNELS;
            *v = (*v / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
        out
    }

    /// [`SampledFrames::clip_pixel_values`] as a tensor `[N, 3, S, S]`.
    pub fn clip_tensor(&self, device: &Device) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(self.clip_pixel_values(), self.shape()),
            device,
        )
    }

    /// The Synchformer pre-processing (`encode_video_with_synchformer`): u8 values times
    /// float32(1/255) (floats in [0, 1] are not rescaled), then `(x - 0.5) / 0.5`; values in
    /// [-1, 1], `[N, 3, S, S]`.
    pub fn sync_pixel_values(&self) -> Vec<f32> {
        let scale = 1.0f32 / 255.0;
        let unit: Vec<f32> = match &self.pixels {
            Pixels::U8(v) => v.iter().map(|&x| x as f32 * scale).collect(),
            Pixels::Unit(v) => v.clone(),
        };
        unit.into_iter().map(|x| (x - 0.5) / 0.5).collect()
    }

    /// [`SampledFrames::sync_pixel_values`] with a leading batch axis: `[1, N, 3, S, S]`, the
    /// input of [`Synchformer::forward`](crate::synchformer::Synchformer::forward).
    pub fn sync_tensor(&self, device: &Device) -> Tensor<5> {
        let [n, c, h, w] = self.shape();
        Tensor::from_data(
            TensorData::new(self.sync_pixel_values(), [1, n, c, h, w]),
            device,
        )
    }
}
