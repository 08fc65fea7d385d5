//! Encoders and conditioners of AudioX-Turbo: T5, CLIP vision, Synchformer, and the video,
//! text and audio-prompt conditioners.
#![deny(missing_docs)]

pub mod clip;
pub mod conditioners;
pub mod frames;
#[cfg(feature = "parity")]
pub mod parity;
pub mod synchformer;
pub mod t5;
pub mod tokenizer;
#[cfg(feature = "video")]
pub mod video_file;

/// The weight file of a Hugging Face model folder: `model.safetensors`, else
/// `pytorch_model.bin`. `what` names the folder in the error (`"T5"`, `"CLIP"`).
pub fn hf_weights_file(
    dir: &std::path::Path,
    what: &str,
) -> audiox_core::Result<std::path::PathBuf> {
    hf_weights_file_if_any(dir).ok_or_else(|| {
        audiox_core::Error::io(
            dir.join("model.safetensors"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no model.safetensors or pytorch_model.bin in the {what} folder"),
            ),
        )
    })
}

/// [`hf_weights_file`], or `None` when the folder holds neither file.
pub fn hf_weights_file_if_any(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}
