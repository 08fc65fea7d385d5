//! Intermediate values of a traced pass, for parity checks and debugging.
//!
//! The traced entry points ([`Dit::prepare_traced`](crate::Dit::prepare_traced),
//! [`Dit::forward_traced`](crate::Dit::forward_traced),
//! [`MafBlock::refine_traced`](crate::MafBlock::refine_traced)) record what the untraced ones
//! compute, under the names of the golden fixtures' `mid.*` tensors (`mid.block0.qkv`, ...) and
//! in their layouts. Recording reads the values back from the device, so it is for tests and
//! debugging only; the untraced paths record nothing and pay nothing.

use burn::tensor::Tensor;

/// One recorded tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    /// The fixture name (`mid.timestep_embed`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// The recorded intermediates of one or more traced calls, in recording order.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    entries: Vec<TraceEntry>,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `tensor` under `name` (a later entry of the same name shadows an earlier one).
    pub fn record<const D: usize>(&mut self, name: impl Into<String>, tensor: &Tensor<D>) {
        self.entries.push(TraceEntry {
            name: name.into(),
            shape: tensor.dims().to_vec(),
            values: audiox_core::tensor::to_vec(tensor.clone()),
        });
    }

    /// The latest entry named `name`.
    pub fn get(&self, name: &str) -> Option<&TraceEntry> {
        self.entries.iter().rev().find(|e| e.name == name)
    }

    /// Every entry, in recording order.
    pub fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }
}

/// Records into an optional trace; `name` is only formatted when tracing.
pub(crate) fn record<const D: usize>(
    trace: &mut Option<&mut Trace>,
    name: impl FnOnce() -> String,
    tensor: &Tensor<D>,
) {
    if let Some(trace) = trace.as_deref_mut() {
        trace.record(name(), tensor);
    }
}

/// Like [`record`] for a tensor derived for the trace only (a layout change): `tensor` runs
/// only when tracing.
pub(crate) fn record_with<const D: usize>(
    trace: &mut Option<&mut Trace>,
    name: impl FnOnce() -> String,
    tensor: impl FnOnce() -> Tensor<D>,
) {
    if let Some(trace) = trace.as_deref_mut() {
        trace.record(name(), &tensor());
    }
}
