//! Asynchronous generation: submit a [`Request`] to a [`JobQueue`] and get a [`Job`] handle at
//! once; poll its progress, cancel it, wait for it with a timeout and take its result.
//!
//! ```no_run
//! use std::time::Duration;
//! use audiox::{AudioX, Request};
//! use audiox::jobs::JobQueue;
//!
//! let model = AudioX::builder().checkpoint_dir("checkpoints").build()?;
//! let queue = JobQueue::new(model, 1)?;
//! let job = queue.submit(Request::text("a door slams").seed(1));
//! while !job.wait_timeout(Duration::from_millis(100)) {
//!     let p = job.progress();
//!     println!("{:?} step {}/{} ({:.0} %)", p.stage, p.step, p.total_steps, p.fraction * 100.0);
//! }
//! let out = job.take().expect("finished")?;
//! out.audio[0].write_wav("door.wav")?;
//! # Ok::<(), audiox::Error>(())
//! ```
//!
//! # How many jobs run at once, and threads
//!
//! A queue owns `workers` threads (fixed when it is created; one is the usual choice). Each
//! worker takes the oldest queued job and runs it to the end; the others wait in the queue in
//! submission order, so at most `workers` jobs run at once. A running job does its tensor work
//! on rayon's global pool (`RAYON_NUM_THREADS`, or `rayon::ThreadPoolBuilder::build_global`
//! before the first job): one worker already uses every core of that pool for its matrix
//! products, and several workers share the same pool (their work interleaves; total throughput
//! is about the same, each job is slower).
//! More workers are useful when jobs have long single-threaded parts (ffmpeg video decoding,
//! file I/O) or on a GPU device. The model is shared, not copied: every worker holds a clone of
//! the same [`AudioX`]. Results do not depend on the number of workers or threads (same seed,
//! same bits).
//!
//! Cancellation is checked between sampler steps (and, once the sampler crate checks there,
//! between stages); a job cancelled while queued never starts. A cancelled job's result is
//! [`Error::Cancelled`], never audio, even when the cancellation arrives during decoding.
//! Dropping the queue cancels every job that has not finished and waits for the workers to
//! stop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use audiox_core::{Error, Result};
use audiox_sampler::{CancelToken, StepControl};

use crate::generate::Generation;
use crate::model::AudioX;
use crate::request::Request;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStage {
    /// Waiting for a worker.
    Queued,
    /// Running the encoders (text, video, audio prompt) and the fusion block.
    Conditioning,
    /// Running the sampler (see `step` / `total_steps`).
    Sampling,
    /// Decoding the latent and post-processing the audio.
    Decoding,
    /// Finished with audio.
    Done,
    /// Finished with an error.
    Failed,
    /// Cancelled (no audio).
    Cancelled,
}

impl JobStage {
    /// Whether the job has finished (done, failed or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStage::Done | JobStage::Failed | JobStage::Cancelled
        )
    }
}

/// A snapshot of a job's progress. Successive snapshots of one job never go backwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    /// The current stage.
    pub stage: JobStage,
    /// Sampler steps finished.
    pub step: usize,
    /// Sampler steps of the run (0 until sampling starts).
    pub total_steps: usize,
    /// A rough overall fraction in `[0, 1]`: 0 queued, 0.05 conditioning, 0.05..0.9 over the
    /// sampler steps, 0.9 decoding, 1 finished. Monotone.
    pub fraction: f32,
}

impl JobProgress {
    const QUEUED: JobProgress = JobProgress {
        stage: JobStage::Queued,
        step: 0,
        total_steps: 0,
        fraction: 0.0,
    };
}

struct JobState {
    progress: JobProgress,
    result: Option<Result<Generation>>,
    taken: bool,
}

struct JobShared {
    id: u64,
    cancel: CancelToken,
    state: Mutex<JobState>,
    finished: Condvar,
}

impl JobShared {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        // A poisoned lock only means a callback panicked mid-update; the state is still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves progress forward (never backwards).
    fn advance(&self, next: JobProgress) {
        let mut s = self.lock();
        if !s.progress.stage.is_finished() && next.fraction >= s.progress.fraction {
            s.progress = next;
        }
    }

    fn finish(&self, result: Result<Generation>) {
        let mut s = self.lock();
        let stage = match &result {
            Ok(_) => JobStage::Done,
            Err(Error::Cancelled { .. }) => JobStage::Cancelled,
            Err(_) => JobStage::Failed,
        };
        s.progress = JobProgress {
            stage,
            fraction: 1.0,
            ..s.progress
        };
        s.result = Some(result);
        drop(s);
        self.finished.notify_all();
    }
}

/// A handle on a submitted request. Cheap to clone (clones refer to the same job); `Send +
/// Sync`. Dropping a handle does not cancel the job.
#[derive(Clone)]
pub struct Job {
    shared: Arc<JobShared>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.shared.id)
            .field("progress", &self.progress())
            .finish()
    }
}

impl Job {
    /// The job's number, unique within the process, in submission order.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The current progress.
    pub fn progress(&self) -> JobProgress {
        self.shared.lock().progress
    }

    /// Whether the job has finished (with audio, an error, or cancelled).
    pub fn is_finished(&self) -> bool {
        self.shared.lock().progress.stage.is_finished()
    }

    /// Asks the job to stop: a queued job never starts, a running one stops at its next
    /// check (between sampler steps). Its result becomes [`Error::Cancelled`]. Has no effect
    /// on a finished job.
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// Waits until the job has finished or `timeout` has passed; `true` when it has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        while !s.progress.stage.is_finished() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .shared
                .finished
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits until the job has finished.
    pub fn wait(&self) {
        let mut s = self.shared.lock();
        while !s.progress.stage.is_finished() {
            s = self
                .shared
                .finished
                .wait(s)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The result, once: `None` while the job runs or after it was taken (by any clone).
    pub fn take(&self) -> Option<Result<Generation>> {
        let mut s = self.shared.lock();
        let r = s.result.take();
        if r.is_some() {
            s.taken = true;
        }
        r
    }

    /// Whether the result was already taken.
    pub fn is_taken(&self) -> bool {
        self.shared.lock().taken
    }

    /// Waits for the job and takes its result (an `InvalidRequest` error if another clone
    /// took it first).
    pub fn join(self) -> Result<Generation> {
        self.wait();
        self.take().unwrap_or_else(|| {
            Err(Error::InvalidRequest(format!(
                "the result of job {} was already taken",
                self.shared.id
            )))
        })
    }
}

struct Queue {
    pending: VecDeque<(Arc<JobShared>, Request)>,
    running: Vec<Arc<JobShared>>,
    shutdown: bool,
}

struct QueueShared {
    model: AudioX,
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl QueueShared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

/// A queue of generation jobs on one model, served by a fixed number of worker threads (see
/// the [module docs](self) for how many run at once and how threads are shared). `Send +
/// Sync`: submit from any thread.
pub struct JobQueue {
    shared: Arc<QueueShared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.shared.lock();
        f.debug_struct("JobQueue")
            .field("workers", &self.workers.len())
            .field("queued", &q.pending.len())
            .field("running", &q.running.len())
            .finish()
    }
}

impl JobQueue {
    /// A queue on `model` with `workers` threads (at least 1); their tensor work runs on
    /// rayon's global pool. Fails with [`Error::Io`] if the system refuses a thread (the
    /// workers already started are stopped and joined).
    pub fn new(model: AudioX, workers: usize) -> crate::Result<Self> {
        let shared = Arc::new(QueueShared {
            model,
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                running: Vec::new(),
                shutdown: false,
            }),
            wake: Condvar::new(),
        });
        let mut queue = JobQueue {
            shared,
            workers: Vec::new(),
        };
        for i in 0..workers.max(1) {
            let shared = queue.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("audiox-job-{i}"))
                .spawn(move || worker(&shared));
            match spawned {
                Ok(handle) => queue.workers.push(handle),
                // Dropping the queue stops and joins the workers already started.
                Err(source) => {
                    return Err(crate::Error::Io {
                        path: format!("<worker thread audiox-job-{i}>").into(),
                        source,
                    });
                }
            }
        }
        Ok(queue)
    }

    /// The model the jobs run on.
    pub fn model(&self) -> &AudioX {
        &self.shared.model
    }

    /// Number of worker threads (= the most jobs running at once).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Queues `request` and returns its handle at once. Invalid requests are reported by the
    /// job's result (stage `Failed`), like every other error.
    pub fn submit(&self, request: Request) -> Job {
        let shared = Arc::new(JobShared {
            id: NEXT_JOB.fetch_add(1, Ordering::Relaxed),
            cancel: CancelToken::new(),
            state: Mutex::new(JobState {
                progress: JobProgress::QUEUED,
                result: None,
                taken: false,
            }),
            finished: Condvar::new(),
        });
        self.shared
            .lock()
            .pending
            .push_back((shared.clone(), request));
        self.shared.wake.notify_one();
        Job { shared }
    }

    /// Cancels every queued and running job.
    pub fn cancel_all(&self) {
        let q = self.shared.lock();
        for (job, _) in &q.pending {
            job.cancel.cancel();
        }
        for job in &q.running {
            job.cancel.cancel();
        }
    }
}

impl Drop for JobQueue {
    fn drop(&mut self) {
        self.cancel_all();
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // Anything still queued (workers stopped first) finishes as cancelled.
        let left: Vec<_> = self.shared.lock().pending.drain(..).collect();
        for (job, _) in left {
            job.finish(Err(Error::Cancelled {
                completed_steps: 0,
                total_steps: 0,
            }));
        }
    }
}

fn worker(shared: &QueueShared) {
    loop {
        let (job, request) = {
            let mut q = shared.lock();
            loop {
                if q.shutdown {
                    return;
                }
                if let Some(next) = q.pending.pop_front() {
                    q.running.push(next.0.clone());
                    break next;
                }
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = run(&shared.model, &job, request);
        shared.lock().running.retain(|j| !Arc::ptr_eq(j, &job));
        job.finish(result);
    }
}

fn run(model: &AudioX, job: &Arc<JobShared>, request: Request) -> Result<Generation> {
    let cancelled = |job: &JobShared| {
        let p = job.lock().progress;
        Err(Error::Cancelled {
            completed_steps: p.step,
            total_steps: p.total_steps,
        })
    };
    if job.cancel.is_cancelled() {
        return cancelled(job);
    }
    job.advance(JobProgress {
        stage: JobStage::Conditioning,
        step: 0,
        total_steps: 0,
        fraction: 0.05,
    });
    let reporter = job.clone();
    let mut control = StepControl::new()
        .with_cancel(job.cancel.clone())
        .with_progress(move |info| {
            let done = info.step + 1;
            let total = info.total.max(1);
            reporter.advance(JobProgress {
                stage: if done >= total {
                    JobStage::Decoding
                } else {
                    JobStage::Sampling
                },
                step: done,
                total_steps: info.total,
                fraction: if done >= total {
                    0.9
                } else {
                    0.05 + 0.85 * done as f32 / total as f32
                },
            });
        });
    let model = model.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.generate_with(request, &mut control)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::InvalidRequest(format!(
            "internal error while generating (a bug; please report it): {what}"
        )))
    });
    // A cancellation that arrived after the last sampler step still yields no audio.
    if job.cancel.is_cancelled() && !matches!(result, Err(Error::Cancelled { .. })) {
        return cancelled(job);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<Job>();
        is::<JobQueue>();
    }

    #[test]
    fn stages_know_when_they_are_finished() {
        assert!(!JobStage::Queued.is_finished());
        assert!(!JobStage::Decoding.is_finished());
        assert!(JobStage::Done.is_finished() && JobStage::Cancelled.is_finished());
    }
}
