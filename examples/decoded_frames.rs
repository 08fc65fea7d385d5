//! Video-to-audio from frames the application decoded itself (a game engine's render target, a
//! camera pipeline): no ffmpeg involved.
//!
//! ```text
//! cargo run --release --example decoded_frames [-- --checkpoint-dir checkpoints]
//! ```
//!
//! The frames here are a synthetic moving gradient at 24 fps; any RGB size and frame rate works
//! (the reference's frame selection and resize are applied).

use std::path::PathBuf;

use audiox::{AudioX, Request, VideoFrames};

fn main() -> audiox::Result<()> {
    let dir = std::env::args()
        .skip_while(|a| a != "--checkpoint-dir")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/tiny/bundle"
            ))
        });
    let model = AudioX::builder().checkpoint_dir(dir).build()?;

    // 10 s at 24 fps of 96 x 128 RGB: a bright bar sweeping across the frame.
    let (n, h, w, fps) = (240usize, 96usize, 128usize, 24.0);
    let mut pixels = Vec::with_capacity(n * h * w * 3);
    for f in 0..n {
        let bar = f * w / n;
        for _y in 0..h {
            for x in 0..w {
                let v = if x.abs_diff(bar) < 8 {
                    255
                } else {
                    (x * 255 / w) as u8 / 4
                };
                pixels.extend_from_slice(&[v, v / 2, 255 - v]);
            }
        }
    }
    let frames = VideoFrames::new(pixels, [n, h, w, 3], fps)?;
    let out = model.generate(
        Request::text("a whoosh passing from left to right")
            .video_frames(frames)
            .seed(3),
    )?;
    out.audio[0].write_wav("decoded_frames.wav")?;
    println!("wrote decoded_frames.wav; {}", out.timings);
    Ok(())
}
