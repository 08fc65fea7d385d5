//! Parity of the CLIP vision tower: fixture `clip_vision`.

use audiox_core::Result;
use audiox_core::fixtures::{Check, Fixture};
use audiox_core::weights::{Component, WeightSource};
use burn::tensor::Device;

use super::text::{compare, input};
use crate::clip::{ClipVision, ClipVisionConfig, normalize_pixels};

/// Fixture `clip_vision`: frames (0..255) -> normalised pixels -> embeddings -> every hidden
/// state -> `last_hidden_state` (no `post_layernorm`) and `image_embeds`. Sizes come from the
/// JSON `clip_config` (a Hugging Face vision config), weights under their Hugging Face names.
pub fn check_clip_vision(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let config = ClipVisionConfig::from_hf_json(fx.field("clip_config")?)?;
    let (clip, _) = ClipVision::load(&config, &[WeightSource::new(fx.weights())], device)?;
    let pixels = normalize_pixels(input(fx, "in.frames", device)?);
    let mut checks = vec![compare(fx, "mid.pixel_values", pixels.clone())?];

    let states = clip.hidden_states(pixels)?;
    let last = states.last().cloned().expect("at least the embeddings");
    let mut states = states.into_iter();
    checks.push(compare(
        fx,
        "mid.embeddings",
        states.next().expect("the embeddings"),
    )?);
    for (k, state) in states.enumerate() {
        let name = format!("mid.hidden_{k}");
        if fx.has(&name) {
            checks.push(compare(fx, &name, state)?);
        }
    }
    checks.push(compare(
        fx,
        "out.image_embeds",
        clip.image_embeds(last.clone()),
    )?);
    checks.push(compare(fx, "out.last_hidden_state", last)?);
    Ok(checks)
}
