//! Decoding long latents in overlapping chunks, to bound memory.
//!
//! The decoder is fully convolutional, so a window of latent frames decodes to the matching
//! window of audio except near the window's edges, where the convolutions see zero padding
//! instead of the neighbouring frames. Each chunk is therefore decoded with `overlap` extra
//! latent frames of context on both sides, and only its central part is kept. The error
//! against the whole-sequence decode falls as the overlap grows (it is zero once the overlap
//! covers the decoder's receptive field); the tests measure it. Peak activation memory is that
//! of a `chunk + 2 * overlap` frame decode instead of the whole latent.

use burn::tensor::Tensor;

use audiox_core::{Error, Result};

use crate::decoder::OobleckDecoder;
use crate::vae::check_latent;

/// Chunking of a decode, in latent frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecode {
    /// Latent frames kept from each chunk.
    pub chunk: usize,
    /// Extra latent frames of context decoded on each side of a chunk and then dropped.
    pub overlap: usize,
}

impl Default for ChunkedDecode {
    /// 64 frames per chunk with 16 frames of context on each side (exact for the full-size
    /// AudioX-Turbo decoder, whose receptive radius is 11 latent frames).
    fn default() -> Self {
        ChunkedDecode {
            chunk: 64,
            overlap: 16,
        }
    }
}

impl ChunkedDecode {
    /// Chunks of `chunk` frames with just enough overlap to reproduce the whole decode.
    pub fn exact(decoder: &OobleckDecoder, chunk: usize) -> Self {
        ChunkedDecode {
            chunk,
            overlap: decoder.receptive_radius(),
        }
    }
}

impl OobleckDecoder {
    /// How many latent frames on each side can influence one output sample (an upper bound):
    /// `3` for the input convolution, then per up-sampling block `39 / U_out` for its residual
    /// units (kernel 7, dilations 1, 3, 9) and `2 / U_in` for its transposed convolution, and
    /// `3 / ratio` for the output convolution, where `U` counts samples per latent frame.
    pub fn receptive_radius(&self) -> usize {
        let mut radius = 3.0f64;
        let mut samples_per_frame = 1.0f64;
        for block in &self.blocks {
            let s = block.up.stride() as f64;
            radius += 2.0 / samples_per_frame;
            samples_per_frame *= s;
            radius += 39.0 / samples_per_frame;
        }
        radius += 3.0 / samples_per_frame;
        radius.ceil() as usize
    }

    /// How many leading latent frames (of `frames`) the first `samples` output samples depend
    /// on: `ceil(samples / ratio)` plus the [receptive radius](Self::receptive_radius), at most
    /// `frames`. Decoding only those frames gives the whole decode's first `samples` samples up
    /// to float rounding (the convolutions' zero padding at the cut is farther away than they
    /// can see; the products' blocking follows the length): what a request trimmed to a
    /// duration shorter than the model's window needs.
    pub fn frames_for_samples(&self, samples: usize, frames: usize) -> usize {
        samples
            .div_ceil(self.upsampling_ratio().max(1))
            .saturating_add(self.receptive_radius())
            .min(frames)
    }

    /// Decodes `[B, C, L]` chunk by chunk (see the docs at the top of `chunked.rs`); the output
    /// has the length of a whole decode, `L * ratio`.
    pub fn forward_chunked(&self, latent: Tensor<3>, chunking: ChunkedDecode) -> Result<Tensor<3>> {
        self.forward_chunked_with(latent, chunking, &mut |_, _| Ok(()))
    }

    /// [`forward_chunked`](Self::forward_chunked), calling `before_chunk(index, chunks)` before
    /// each chunk is decoded (`chunks` is 1 when the latent fits one chunk); an error from it
    /// stops the decode and is returned. Pipelines check their cancellation token there.
    ///
    /// ```
    /// # use audiox_vae::{ChunkedDecode, OobleckDecoder};
    /// # fn decode(decoder: &OobleckDecoder, latent: burn::tensor::Tensor<3>) -> audiox_core::Result<()> {
    /// let mut seen = Vec::new();
    /// let audio = decoder.forward_chunked_with(latent, ChunkedDecode::default(), &mut |i, n| {
    ///     seen.push((i, n));
    ///     Ok(())
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn forward_chunked_with(
        &self,
        latent: Tensor<3>,
        chunking: ChunkedDecode,
        before_chunk: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Tensor<3>> {
        check_latent(self, &latent)?;
        if chunking.chunk == 0 {
            return Err(Error::InvalidRequest(
                "chunked decode needs chunk >= 1".into(),
            ));
        }
        let [_, _, len] = latent.dims();
        if len <= chunking.chunk {
            before_chunk(0, 1)?;
            return Ok(self.forward(latent));
        }
        let ratio = self.upsampling_ratio();
        let chunks = len.div_ceil(chunking.chunk);
        let mut pieces = Vec::with_capacity(chunks);
        let mut start = 0;
        while start < len {
            before_chunk(pieces.len(), chunks)?;
            let end = (start + chunking.chunk).min(len);
            let from = start.saturating_sub(chunking.overlap);
            let to = (end + chunking.overlap).min(len);
            let audio = self.forward(latent.clone().narrow(2, from, to - from));
            pieces.push(audio.narrow(2, (start - from) * ratio, (end - start) * ratio));
            start = end;
        }
        Ok(Tensor::cat(pieces, 2))
    }
}
