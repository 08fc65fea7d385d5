//! Decoded video frames and what the reference does to them before the encoders see them.
//!
//! * [`VideoFrames`]: decoded RGB video, `[N, H, W, 3]` u8 plus its declared average frame rate
//!   (the layout a decoder returns; a host application with its own decoder builds it directly).
//! * [`FrameSampling`]: the reference's frame selection (`read_video`): decimation by an integer
//!   step, then padding by repeating the last frame (or truncation) to
//!   `int(duration * target_fps)` frames, and the square output size.
//! * [`Resizer`]: torchvision's antialiased bilinear resize of uint8 frames, reproduced
//!   operation by operation (float32 separable passes, width first, round half to even).
//! * [`SampledFrames`]: the result, `[N, 3, S, S]`, with the CLIP pre-processing
//!   ([`SampledFrames::clip_pixel_values`]) and the Synchformer pre-processing
//!   ([`SampledFrames::sync_pixel_values`]).
//! * [`StillImage`]: a PNG/JPEG image used as a still video, scaled like a video frame by default
//!   or, on request, the way the reference scales it ([`ImageScaling`]).
//!
//! `docs/video.md` describes the whole video path and where it departs from the reference.

mod resize;
mod sampled;
mod sampling;
mod still;
mod video;

pub use resize::Resizer;
pub use sampled::{Pixels, SampledFrames};
pub use sampling::FrameSampling;
pub(crate) use sampling::ResizedFrames;
pub use still::{ImageScaling, StillImage};
pub use video::VideoFrames;

use audiox_core::{Error, Result};

/// Colour channels of every frame (RGB).
pub const CHANNELS: usize = 3;

fn check_fps(fps: f64, what: &str) -> Result<()> {
    if fps.is_finite() && fps > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{what} must be a positive frame rate, got {fps}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::resize::AxisTaps;
    use super::*;

    #[test]
    fn taps_are_normalised_and_cover_the_input() {
        for (input, output) in [(40, 32), (30, 32), (1920, 224), (224, 224), (7, 3), (3, 7)] {
            let taps = AxisTaps::new(input, output);
            for i in 0..output {
                let w = &taps.weights[i * taps.max_taps..i * taps.max_taps + taps.count[i]];
                let sum: f32 = w.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{input}->{output} at {i}: {sum}");
                assert!(taps.start[i] + taps.count[i] <= input);
            }
        }
    }

    #[test]
    fn same_size_is_the_identity() {
        let frame: Vec<u8> = (0..5 * 5 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let r = Resizer::new(5, 5, 5).unwrap();
        let out = r.resize_u8(&frame).unwrap();
        // Channels first.
        for p in 0..25 {
            for c in 0..3 {
                assert_eq!(out[c * 25 + p], frame[p * 3 + c]);
            }
        }
    }

    #[test]
    fn a_constant_frame_stays_constant() {
        let frame = vec![77u8; 17 * 29 * 3];
        let out = Resizer::new(17, 29, 8).unwrap().resize_u8(&frame).unwrap();
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn halving_uses_the_stretched_triangle() {
        // 4 -> 2: scale 2, support 2. Output 0 is centred at input coordinate 1.0 and reads
        // pixels 0..3 (pixel 3 lies outside the support) at distances 0.5, 0.5, 1.5 from the
        // centre, i.e. weights 0.75, 0.75, 0.25, normalised by their sum 1.75.
        let taps = AxisTaps::new(4, 2);
        let src = [0.0f32, 100.0, 200.0, 100.0];
        let (start, weights) = taps.taps(0);
        assert_eq!((start, weights.len()), (0, 3));
        let got: f32 = weights.iter().zip(&src[start..]).map(|(w, x)| w * x).sum();
        let expect = (0.0 * 0.75 + 100.0 * 0.75 + 200.0 * 0.25) / 1.75;
        assert!((got - expect).abs() < 1e-4, "{got}");
    }

    #[test]
    fn selection_follows_the_reference_rule() {
        // 30 fps, 5 fps target, 2 s: step 6, 10 frames wanted, 37 available -> 7 + 3 padded.
        let s = FrameSampling::new(5.0, 2.0, 8);
        assert_eq!(s.step(30.0), 6);
        let ids = s.selected_ids(30.0, 37).unwrap();
        assert_eq!(ids, vec![0, 6, 12, 18, 24, 30, 36]);
        assert_eq!(
            s.output_index(&ids),
            vec![0, 6, 12, 18, 24, 30, 36, 36, 36, 36]
        );
        // 24 fps read at 5 fps: step ceil(4.8) = 5; seek 0.5 s -> frame 12.
        let s = FrameSampling::new(5.0, 1.0, 8).with_seek(0.5);
        assert_eq!(s.selected_ids(24.0, 100).unwrap(), vec![12, 17, 22, 27, 32]);
        // A source slower than the target repeats nothing: step 1.
        assert_eq!(FrameSampling::new(25.0, 1.0, 8).step(10.0), 1);
    }

    #[test]
    fn bad_samplings_are_refused() {
        for s in [
            FrameSampling::new(0.0, 1.0, 8),
            FrameSampling::new(5.0, -1.0, 8),
            FrameSampling::new(5.0, 0.1, 8),
            FrameSampling::new(5.0, 1.0, 0),
            FrameSampling::new(5.0, 1.0, 8).with_seek(-1.0),
            FrameSampling::new(f64::NAN, 1.0, 8),
        ] {
            assert!(
                matches!(s.validate(), Err(Error::InvalidRequest(_))),
                "{s:?}"
            );
        }
        // Seeking past the end.
        let s = FrameSampling::new(5.0, 1.0, 8).with_seek(10.0);
        assert!(matches!(
            s.selected_ids(30.0, 37),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn bad_frame_buffers_are_refused() {
        let err = |r: Result<VideoFrames>| matches!(r, Err(Error::InputShape { .. }));
        assert!(err(VideoFrames::new(
            vec![0; 4 * 4 * 4],
            [1, 4, 4, 4],
            30.0
        )));
        assert!(err(VideoFrames::new(vec![], [0, 4, 4, 3], 30.0)));
        assert!(err(VideoFrames::new(vec![0; 10], [1, 4, 4, 3], 30.0)));
        assert!(matches!(
            VideoFrames::new(vec![0; 48], [1, 4, 4, 3], 0.0),
            Err(Error::InvalidRequest(_))
        ));
        assert!(err(VideoFrames::from_images(&[], 30.0)));
        let a = image::RgbImage::new(4, 4);
        let b = image::RgbImage::new(5, 4);
        assert!(err(VideoFrames::from_images(&[a, b], 30.0)));
    }
}
