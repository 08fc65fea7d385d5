//! Still images as still videos, the two image scalings, and the pixel pre-processing.

use audiox_core::Error;
use audiox_encoders::clip::{CLIP_MEAN, CLIP_STD};
use audiox_encoders::frames::{FrameSampling, ImageScaling, Pixels, SampledFrames, StillImage};
use image::{ImageFormat, RgbImage};

fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
    })
}

fn u8_values(frames: &SampledFrames) -> &[u8] {
    match frames.pixels() {
        Pixels::U8(v) => v,
        Pixels::Unit(_) => panic!("expected u8 frames"),
    }
}

#[test]
fn png_and_jpeg_files_load_as_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let img = gradient(40, 30);
    let png = dir.path().join("still.png");
    img.save(&png).unwrap();
    let still = StillImage::open(&png).unwrap();
    assert_eq!((still.height(), still.width()), (30, 40));
    assert_eq!(still.as_bytes(), img.as_raw().as_slice());

    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut jpeg, ImageFormat::Jpeg)
        .unwrap();
    let still = StillImage::decode(jpeg.get_ref()).unwrap();
    assert_eq!((still.height(), still.width()), (30, 40));
}

#[test]
fn unreadable_images_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    match StillImage::open(&bad) {
        Err(Error::Image { path, .. }) => assert_eq!(path.as_deref(), Some(bad.as_path())),
        other => panic!("expected Image, got {other:?}"),
    }
    assert!(matches!(
        StillImage::open(dir.path().join("absent.png")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        StillImage::from_rgb(vec![0; 10], 2, 2),
        Err(Error::InputShape { .. })
    ));
    assert!(matches!(
        StillImage::from_rgb(vec![], 0, 0),
        Err(Error::InputShape { .. })
    ));
}

/// By default a still image is exactly a still video: the same frames as the image repeated
/// at any frame rate.
#[test]
fn an_image_samples_like_a_still_video() {
    let img = gradient(40, 30);
    let still = StillImage::from_rgb(img.into_raw(), 30, 40).unwrap();
    let sampling = FrameSampling::new(5.0, 2.0, 16);
    let frames = still.sample(&sampling, ImageScaling::LikeVideo).unwrap();
    assert_eq!(frames.shape(), [10, 3, 16, 16]);
    assert_eq!(frames.source_index(), &[0; 10]);
    let video = still.to_video(60, 30.0).unwrap().sample(&sampling).unwrap();
    assert_eq!(u8_values(&frames), u8_values(&video));
    assert_eq!(ImageScaling::default(), ImageScaling::LikeVideo);
}

/// The reference scaling keeps [0, 1] floats, so CLIP sees values within 1/255 of black,
/// while the Synchformer input agrees with the default scaling up to rounding.
#[test]
fn the_reference_scaling_darkens_only_the_clip_input() {
    let img = gradient(40, 30);
    let still = StillImage::from_rgb(img.into_raw(), 30, 40).unwrap();
    let sampling = FrameSampling::new(5.0, 1.0, 16);
    let ours = still.sample(&sampling, ImageScaling::LikeVideo).unwrap();
    let reference = still.sample(&sampling, ImageScaling::Reference).unwrap();
    assert!(matches!(reference.pixels(), Pixels::Unit(_)));

    let plane = 16 * 16;
    let clip = reference.clip_pixel_values();
    for (i, v) in clip.iter().enumerate() {
        let c = (i / plane) % 3;
        let black = -CLIP_MEAN[c] / CLIP_STD[c];
        assert!(
            v - black >= -1e-6 && v - black <= 1.0 / 255.0 / CLIP_STD[c] + 1e-6,
            "{v}"
        );
    }
    // The default scaling spans the real range.
    let spread = ours
        .clip_pixel_values()
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(spread > 1.0, "{spread}");

    let (a, b) = (ours.sync_pixel_values(), reference.sync_pixel_values());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1.0 / 255.0 + 1e-6, "{worst}");
    assert!(worst > 0.0, "the two paths round differently somewhere");
}

#[test]
fn pixel_preprocessing_on_known_values() {
    // One 1x1 "frame" per channel value: white, black, mid grey.
    let pixels = vec![255, 255, 255, 0, 0, 0, 128, 128, 128];
    let frames = SampledFrames::new(Pixels::U8(pixels), 1, vec![0, 1, 2]).unwrap();
    let clip = frames.clip_pixel_values();
    let sync = frames.sync_pixel_values();
    for c in 0..3 {
        assert_eq!(clip[c], (1.0 - CLIP_MEAN[c]) / CLIP_STD[c]);
        assert_eq!(clip[3 + c], -CLIP_MEAN[c] / CLIP_STD[c]);
        assert_eq!(sync[c], 1.0);
        assert_eq!(sync[3 + c], -1.0);
    }
    assert!((sync[6] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-7);
    assert_eq!(frames.pixel_values()[6], 128.0);
    assert!(!frames.is_all_zero());

    let device = burn::tensor::Device::flex();
    assert_eq!(frames.sync_tensor(&device).dims(), [1, 3, 3, 1, 1]);
    assert_eq!(frames.clip_tensor(&device).dims(), [3, 3, 1, 1]);
    assert_eq!(frames.to_tensor(&device).dims(), [3, 3, 1, 1]);

    let black = StillImage::from_rgb(vec![0; 4 * 4 * 3], 4, 4).unwrap();
    let sampling = FrameSampling::new(5.0, 1.0, 2);
    for scaling in [ImageScaling::LikeVideo, ImageScaling::Reference] {
        assert!(black.sample(&sampling, scaling).unwrap().is_all_zero());
    }
    assert!(matches!(
        SampledFrames::new(Pixels::U8(vec![0; 5]), 1, vec![0]),
        Err(Error::InputShape { .. })
    ));
}
