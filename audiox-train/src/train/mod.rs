//! The trainer (feature `train`): resumable, seeded training of the demo model's stages with
//! burn's autodiff.
//!
//! * [`run`]: the [`RunConfig`] (seeds, corpus, model in the official schema, stage settings)
//!   and the [`RunDir`] holding `run.json`, written at the start and checked on every resume;
//! * [`average`]: the parameter-by-parameter mean of several checkpoints (weight averaging) and
//!   the exponential moving average the loop keeps with [`LoopSettings::ema_decay`];
//! * [`checkpoint`]: atomic checkpoints (model + optimiser state + step), verified by length
//!   and SHA-256 before they are parsed;
//! * [`init`]: seeded random initial weights at PyTorch's default scales;
//! * [`log`]: the stage's loss log (`loss.jsonl`, one JSON record per step);
//! * [`stage`]: the loop every stage shares ([`train_stage`]): resume from the newest
//!   checkpoint, step, append to `loss.jsonl`, checkpoint every N steps, and when the last
//!   step is done the mean of the checkpoints named by [`LoopSettings::checkpoint_mean`];
//! * [`vae`]: the Oobleck VAE stage and its export to the layout the model builder loads;
//! * [`stft`]: the VAE's multi-resolution STFT loss;
//! * [`guide`]: the VAE stage's optional compression curriculum (the decoder first decodes
//!   log band energies of the audio while the encoder learns to predict them);
//! * [`eval`]: reconstruction quality of a trained VAE on held-out clips (SNR and the
//!   instruction-following metric);
//! * [`flow`]: the rectified-flow objective with condition dropout;
//! * [`latent_store`]: the teacher's clip latents kept in the run folder between processes;
//! * [`teacher`]: the DiT + MAF teacher stage (with the small T5 and the conditioners'
//!   trainable parts) and its export to the layout the model builder loads;
//! * [`timeline`]: the teacher's optional timeline supervision of its conditioning;
//! * [`grow`]: a teacher started from another run's trained teacher, optionally with a deeper
//!   DiT whose added blocks start as the identity (`teacher.init_from`);
//! * [`pipeline`]: a run's stages in order, each exported when it stops, after the base run a
//!   run's teacher may start from (`teacher.init_from.base`);
//! * [`export`]: trained modules written under their official tensor names;
//! * [`dmd`]: the DMD student stage (distribution matching with a fake-score model trained
//!   online, a regression term on cached teacher trajectories), run by
//!   [`train_multi_stage`] (two models, two optimisers);
//! * [`critic`]: the student stage's optional adversarial critic against encoded corpus clips
//!   (`student.critic`).
//!
//! Batches and noise of step `s` are drawn from a random stream seeded by `(run seed, stage,
//! s)`, so the step number is the whole data position: a run interrupted and resumed from a
//! checkpoint computes exactly what an uninterrupted run computes (`tests/trainer.rs` checks
//! the weights bit for bit).
//!
//! ```no_run
//! use audiox_train::train::{RunConfig, RunDir, Stop, VaeStage, train_stage};
//! let device = burn::tensor::Device::flex().autodiff();
//! let run = RunDir::open("runs/demo", RunConfig::demo())?;
//! let stage = VaeStage::new(run.config(), &device)?;
//! let outcome = train_stage(&stage, &run, &device, Stop::never(), &mut |r| println!("{} {:.4}", r.step, r.loss))?;
//! println!("VAE at step {}", outcome.step);
//! # Ok::<(), audiox_train::train::TrainError>(())
//! ```

pub mod average;
pub mod checkpoint;
pub mod critic;
pub mod dmd;
pub mod error;
pub mod eval;
pub mod export;
pub mod flow;
pub mod grow;
pub mod guide;
pub mod init;
pub mod judge;
pub mod latent_store;
pub mod log;
pub mod pipeline;
pub mod run;
pub mod stage;
pub mod stft;
pub mod teacher;
pub mod timeline;
pub mod vae;

pub use dmd::StudentStage;
pub use error::{TrainError, TrainResult};
pub use log::{LogRecord, LossLog};
pub use run::{
    CheckpointMean, LoopSettings, LrDecay, RunConfig, RunDir, StageName, StudentStageConfig,
};
pub use stage::{
    MultiStage, Stage, StageOutcome, Stop, train_multi_stage, train_stage, trained_weights,
};
pub use teacher::{PromptMasking, TeacherModel, TeacherStage, export_teacher, masked_prompt};
pub use vae::{VaeStage, export_vae};
