//! Property tests on hostile images (bounded, run in CI): mutated PNG and JPEG files must
//! decode or return an error, never panic, and never allocate past the limits.
//! `tests/corpus/image/` holds earlier finds, replayed first. `AUDIOX_FUZZ_CASES=N` runs N
//! cases.

use std::path::PathBuf;

use audiox_core::fuzz::{cases, check_no_panic};
use audiox_core::limits::Limits;
use audiox_encoders::frames::{FrameSampling, ImageScaling, StillImage};

fn encoded(format: image::ImageFormat, width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 17) as u8, (y * 29) as u8, ((x + y) * 7) as u8])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), format)
        .unwrap();
    out
}

#[test]
fn mutated_images_never_panic() {
    let seeds = vec![
        encoded(image::ImageFormat::Png, 12, 9),
        encoded(image::ImageFormat::Jpeg, 16, 8),
        {
            let grey =
                image::GrayAlphaImage::from_fn(5, 7, |x, y| image::LumaA([x as u8, y as u8]));
            let mut out = Vec::new();
            image::DynamicImage::ImageLumaA8(grey)
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        },
    ];
    // Small limits, so that a mutated size field meets them often.
    let limits = Limits {
        max_image_side: 512,
        max_image_pixels: 64 * 1024,
        ..Limits::default()
    };
    let sampling = FrameSampling::new(1.0, 2.0, 8);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/image");
    check_no_panic("image", corpus, &seeds, cases(800), 11, |b| {
        if let Ok(image) = StillImage::decode_with_limits(b, &limits) {
            assert!(
                limits
                    .check_image("image", image.width(), image.height())
                    .is_ok()
            );
            let _ = image.sample(&sampling, ImageScaling::LikeVideo);
        }
    });
}
