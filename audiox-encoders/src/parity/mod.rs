//! Parity checks against the golden fixtures: one `check_<fixture>` function per fixture,
//! comparing every `out.*` and `mid.*` tensor with its suggested tolerance.

pub mod conditioner;
pub mod frames;
pub mod synchformer;
pub mod text;
pub mod vision;
