//! Choosing the compute device by name (`cpu`, `wgpu`, `vulkan`, `cuda`), and on a GPU the
//! float precision it computes in.
//!
//! ```
//! use audiox::{Precision, select_device};
//!
//! let cpu = select_device("cpu", Precision::F32)?;
//! assert!(select_device("cpu", Precision::Bf16).is_err()); // half precision is GPU-only here
//! assert!(select_device("tpu", Precision::F32).is_err());
//! # let _ = cpu;
//! # Ok::<(), audiox::Error>(())
//! ```
//!
//! The GPU devices exist in builds with the `audiox` crate's `wgpu`, `vulkan` or `cuda` feature
//! (see `docs/gpu.md`).

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, FloatDType};

use audiox_core::{Error, Result};

/// The float type a device computes in (GPU devices). How the weights are held, on any device,
/// is [`crate::WeightPrecision`] ([`crate::AudioXBuilder::weights_precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit float (the default; what the parity fixtures are checked in).
    #[default]
    F32,
    /// IEEE half precision (GPU devices that support it).
    F16,
    /// bfloat16 (GPU devices that support it; WGSL has no bf16, so not on `wgpu`).
    Bf16,
}

impl Precision {
    fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(Error::InvalidRequest(format!(
                "precision `{other}`: expected f32, f16 or bf16"
            ))),
        }
    }
}

/// The device names this build knows, for messages.
pub fn device_names() -> Vec<&'static str> {
    let mut names = vec!["cpu"];
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "vulkan") {
        names.push("vulkan");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// The device called `name`, computing in `precision`.
///
/// * `cpu` (or `flex`): burn's flex backend with the `audiox-kernels` CPU kernels; f32 only
///   (reduced precision on the CPU is a weight-format matter, not a device setting).
/// * `wgpu`: burn's wgpu backend on the default adapter, kernels compiled to WGSL (builds with
///   the `wgpu` feature).
/// * `vulkan`: the same pinned to Vulkan, kernels compiled to SPIR-V (`vulkan` feature).
/// * `cuda`: burn's CUDA backend, first GPU (`cuda` feature).
///
/// A half precision is set as the device's default float type, so it must be chosen before
/// any tensor exists on that device (a fresh process: call this before building the model).
/// Errors on an unknown name, a device missing from this build, a precision the device does not
/// compute in, or a device whose settings are already fixed.
pub fn select_device(name: &str, precision: Precision) -> Result<Device> {
    let mut device = match name {
        "cpu" | "flex" => {
            if precision != Precision::F32 {
                return Err(Error::InvalidRequest(format!(
                    "precision {precision} is for GPU devices; the CPU device computes in f32 \
                     (to hold the weights in bf16 or int8 on the CPU, use \
                     AudioXBuilder::weights_precision)"
                )));
            }
            Device::flex()
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        other => {
            return Err(Error::InvalidRequest(format!(
                "device `{other}`: this build knows {} (GPU devices need the audiox crate's \
                 `wgpu`, `vulkan` or `cuda` feature, e.g. \
                 cargo run --release -p audiox --features wgpu --example generate)",
                device_names().join(", ")
            )));
        }
    };
    if precision != Precision::F32 {
        if !device.supports_dtype(precision.dtype()) {
            return Err(Error::InvalidRequest(format!(
                "device `{name}` does not compute in {precision}"
            )));
        }
        device
            .configure(precision.dtype())
            .map_err(|e| Error::InvalidRequest(format!("device `{name}`, {precision}: {e}")))?;
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_round_trip() {
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert!("f8".parse::<Precision>().is_err());
    }

    #[test]
    fn cpu_is_f32_only_and_unknown_names_are_errors() {
        assert!(select_device("cpu", Precision::F32).is_ok());
        assert!(select_device("flex", Precision::F32).is_ok());
        for p in [Precision::F16, Precision::Bf16] {
            let e = select_device("cpu", p).unwrap_err().to_string();
            assert!(e.contains("GPU"), "{e}");
        }
        let e = select_device("tpu", Precision::F32)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cpu"),
            "the message lists the known devices: {e}"
        );
    }
}
