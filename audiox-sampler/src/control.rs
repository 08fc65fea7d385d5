//! Progress reporting and cancellation between sampler steps.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;

use audiox_core::{Error, Result};

/// A cancellation flag shared between the caller and a running sampler. Clones share the flag,
/// so a UI thread can keep one clone and hand another to the request.
///
/// ```
/// use audiox_sampler::CancelToken;
///
/// let token = CancelToken::new();
/// let for_worker = token.clone();
/// assert!(!for_worker.is_cancelled());
/// token.cancel();
/// assert!(for_worker.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work holding a clone of this token to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`cancel`](Self::cancel) was called on any clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What a sampler reports after each finished step. Samplers build it with
/// [`StepInfo::new`] (and [`with_denoised`](StepInfo::with_denoised)); callbacks read the
/// fields.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StepInfo<'a> {
    /// Index of the step just finished, `0..total`.
    pub step: usize,
    /// Number of steps of the run.
    pub total: usize,
    /// Time at the start of the step (1 = noise, 0 = data).
    pub t: f32,
    /// Time the step moved to.
    pub t_next: f32,
    /// The state after the step `[B, C, L]`: what the next step starts from, or for the last
    /// step what the sampler returns.
    pub x: &'a Tensor<3>,
    /// The step's estimate of the clean latent `x0 = x_t - t v` `[B, C, L]` (at time `t`), when
    /// the sampler computes one (every built-in does when a progress callback is set).
    pub denoised: Option<&'a Tensor<3>>,
}

impl<'a> StepInfo<'a> {
    /// Step `step` of `total` went from `t` to `t_next` and left the state `x` `[B, C, L]`.
    pub fn new(step: usize, total: usize, t: f32, t_next: f32, x: &'a Tensor<3>) -> Self {
        StepInfo {
            step,
            total,
            t,
            t_next,
            x,
            denoised: None,
        }
    }

    /// The same report with the step's clean-latent estimate `[B, C, L]`, when there is one.
    pub fn with_denoised(mut self, denoised: Option<&'a Tensor<3>>) -> Self {
        self.denoised = denoised;
        self
    }
}

type ProgressFn<'a> = Box<dyn FnMut(&StepInfo<'_>) + Send + 'a>;

/// The caller's handle on a running sampler: an optional per-step progress callback and an
/// optional [`CancelToken`], checked before every step.
///
/// ```
/// use audiox_sampler::{CancelToken, StepControl};
///
/// let token = CancelToken::new();
/// let mut seen = Vec::new();
/// let mut control = StepControl::new()
///     .with_cancel(token.clone())
///     .with_progress(|info| seen.push((info.step, info.total, info.t)));
/// assert!(control.check_cancelled(0, 4).is_ok());
/// token.cancel();
/// let err = control.check_cancelled(2, 4).unwrap_err();
/// assert_eq!(err.to_string(), "cancelled after 2 of 4 steps");
/// ```
#[derive(Default)]
pub struct StepControl<'a> {
    progress: Option<ProgressFn<'a>>,
    cancel: Option<CancelToken>,
}

impl fmt::Debug for StepControl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepControl")
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .field("cancel", &self.cancel)
            .finish()
    }
}

impl<'a> StepControl<'a> {
    /// No callback, no cancellation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `progress` after every finished step.
    pub fn with_progress(mut self, progress: impl FnMut(&StepInfo<'_>) + Send + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Stops the run at the next step boundary once `token` is cancelled.
    pub fn with_cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The cancellation token, if any.
    pub fn cancel_token(&self) -> Option<&CancelToken> {
        self.cancel.as_ref()
    }

    /// Whether a progress callback is set (samplers skip work done only for reporting when it
    /// is not).
    pub fn has_progress(&self) -> bool {
        self.progress.is_some()
    }

    /// `Err(Error::Cancelled { completed_steps, total_steps })` when cancelled. Samplers call
    /// this before each step, with the number of steps finished so far.
    pub fn check_cancelled(&self, completed_steps: usize, total_steps: usize) -> Result<()> {
        match &self.cancel {
            Some(token) if token.is_cancelled() => Err(Error::Cancelled {
                completed_steps,
                total_steps,
            }),
            _ => Ok(()),
        }
    }

    /// Hands `info` to the progress callback, if any. Samplers call this after each step.
    pub fn report(&mut self, info: &StepInfo<'_>) {
        if let Some(progress) = self.progress.as_mut() {
            progress(info);
        }
    }
}
