//! Foundation of the `audiox` crates: what the component configs share, the workspace error type, weight
//! loading, the [`Audio`](audio::Audio) buffer and the [`NoiseSource`](noise::NoiseSource)
//! abstraction through which every random draw of the pipeline goes.
#![deny(missing_docs)]

pub mod audio;
pub mod config;
pub mod error;
pub mod half;
pub mod limits;
pub mod memory;
pub mod nn;
pub mod noise;
pub mod precision;
pub mod tensor;
pub mod weights;

/// Golden-fixture reading for parity tests and tools (feature `parity`).
#[cfg(feature = "parity")]
pub mod fixtures;

/// Bounded mutation testing (test support for the property tests; feature `parity`, like the
/// rest of the test harness).
#[cfg(feature = "parity")]
pub mod fuzz;

pub use error::{Error, Result};
