//! A smoke run of the DMD student stage at the demo DiT's size (the demo config's `diffusion`
//! section), with a randomly initialised DiT as the teacher and random per-caption contexts
//! standing in for the text side: it measures the cost of a step, not quality.
//!
//! ```sh
//! cargo run --release -p audiox-train --features train --example dmd_smoke -- /tmp/dmd-smoke 6
//! ```
//!
//! Arguments: a fresh run folder, the number of steps (default 6). One thread. Prints each
//! step's terms and time and the median; the teacher pairs (4 pairs, 8 Euler steps here) are
//! timed separately.

use std::time::Instant;

use audiox_train::train::dmd::Prompts;
use audiox_train::train::flow::normals;
use audiox_train::train::init::random_init;
use audiox_train::train::{
    RunConfig, RunDir, Stop, StudentStage, StudentStageConfig, TrainResult, train_multi_stage,
};
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// Random contexts, a fixed function of each caption's text.
struct RandomPrompts([usize; 2]);

impl Prompts<Tensor<3>> for RandomPrompts {
    fn context(&self, captions: &[String], device: &Device) -> TrainResult<Tensor<3>> {
        let [n, d] = self.0;
        let mut out = Vec::with_capacity(captions.len() * n * d);
        for c in captions {
            let seed = c.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            out.extend(normals(&mut ChaCha8Rng::seed_from_u64(seed), n * d));
        }
        Ok(Tensor::from_data(
            TensorData::new(out, [captions.len(), n, d]),
            device,
        ))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: dmd_smoke <fresh run folder> [steps]")?;
    let steps: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(6);
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()?;

    let device = Device::flex().autodiff();
    let run = RunConfig::demo();
    let model = run.model_config()?;
    let teacher = random_init(model.dit().clone().init(&device)?, 1);
    let prompts = RandomPrompts(teacher.context_shape());
    let mut settings = StudentStageConfig::demo();
    settings.optim.steps = steps;
    // The recipe switches guidance at its step 1,400: a smoke run keeps the first guidance.
    settings.guidance_switch = None;
    settings.optim.checkpoint_every = steps.max(1);
    settings.regression_pairs = 4;
    settings.teacher_steps = 8;
    println!(
        "DiT width {}, {} latent channels x {} frames, context {:?}; batch {}, {} fake update(s), \
         regression batch {}",
        teacher.width(),
        teacher.io_channels(),
        teacher.latent_length(),
        teacher.context_shape(),
        settings.optim.batch,
        settings.fake_updates,
        settings.regression_batch
    );
    let run_dir = RunDir::open(&out, run)?;
    let t0 = Instant::now();
    let stage = StudentStage::new(&run_dir, settings, teacher, prompts, &device)?;
    println!("teacher pairs: {:.2} s", t0.elapsed().as_secs_f64());
    let mut seconds = Vec::new();
    train_multi_stage(&stage, &run_dir, &device, Stop::never(), &mut |r| {
        println!(
            "step {:>3}: loss {:.4} {:?} {:.0} ms",
            r.step,
            r.loss,
            r.terms,
            r.seconds * 1e3
        );
        seconds.push(r.seconds);
    })?;
    seconds.sort_by(f64::total_cmp);
    if let Some(m) = seconds.get(seconds.len() / 2) {
        println!("median {:.0} ms/step over {} steps", m * 1e3, seconds.len());
    }
    Ok(())
}
