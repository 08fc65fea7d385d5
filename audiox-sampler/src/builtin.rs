//! The built-in samplers by name.

use audiox_core::{Error, Result};

use crate::guidance::Guidance;
use crate::sampler::Sampler;

/// Names accepted by [`by_name`].
pub const BUILTIN_SAMPLERS: &[&str] = &["dmd", "euler", "heun", "dpmpp-2m"];

/// A built-in sampler by name (see [`BUILTIN_SAMPLERS`]) with `steps` linear steps from 1 to 0
/// and `guidance`.
///
/// ```
/// use audiox_sampler::{by_name, Guidance, Sampler};
///
/// let s = by_name("heun", 10, Guidance::cfg(4.0))?;
/// assert_eq!((s.name(), s.steps(), s.evaluations()), ("heun", 10, 20));
/// assert!(by_name("ddim", 10, Guidance::none()).is_err());
/// # Ok::<(), audiox_core::Error>(())
/// ```
pub fn by_name(name: &str, steps: usize, guidance: Guidance) -> Result<Box<dyn Sampler>> {
    let sampler: Box<dyn Sampler> = match name {
        "dmd" => Box::new(crate::Dmd::new(steps).with_guidance(guidance)),
        "euler" => Box::new(crate::Euler::new(steps).with_guidance(guidance)),
        "heun" => Box::new(crate::Heun::new(steps).with_guidance(guidance)),
        "dpmpp-2m" => Box::new(crate::DpmPp2M::new(steps).with_guidance(guidance)),
        other => {
            return Err(Error::InvalidRequest(format!(
                "unknown sampler `{other}`; the built-in samplers are {}",
                BUILTIN_SAMPLERS.join(", ")
            )));
        }
    };
    Ok(sampler)
}
