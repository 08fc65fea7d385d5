//! Raw pointers that Rayon tasks share: the kernels split one output buffer into disjoint
//! pieces (column blocks, heads, rows, batch items) and let every task write its own piece
//! through the same base pointer, or read one input through it.
//!
//! Rust cannot prove the pieces disjoint, so the pointers are wrapped in types that are `Send`
//! and `Sync`; every use states in its own `SAFETY` comment why the pieces do not overlap and
//! why the buffer outlives the tasks.

/// A mutable base pointer shared by tasks that write disjoint parts of one buffer.
///
/// Read it through [`SendPtr::get`] inside a closure: a closure that names the field `.0`
/// captures only the raw pointer, which is neither `Send` nor `Sync`.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only dereferenced by tasks that write disjoint elements of a buffer
// that outlives them (each use says why).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The base pointer.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A read-only base pointer shared by tasks that only read a buffer that outlives them.
#[derive(Clone, Copy)]
pub(crate) struct SendConstPtr(pub(crate) *const f32);
// SAFETY: the tasks only read through it, and the buffer outlives them (each use says why).
unsafe impl Send for SendConstPtr {}
// SAFETY: as above.
unsafe impl Sync for SendConstPtr {}
