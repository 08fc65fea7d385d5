//! Shared bench helpers: the full-size switch, the backend's matmul roofline measured in the
//! same run, and a one-line report per stage.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor};

pub mod checkpoint;

/// Environment variable that enables the full-size benches (random weights, minutes each).
pub const FULL_SIZE_ENV: &str = "AUDIOX_BENCH_FULL";

/// Whether full-size benches were asked for (`AUDIOX_BENCH_FULL=1`).
pub fn full_size() -> bool {
    std::env::var(FULL_SIZE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The device benches run on (`Device::flex()` unless built for a GPU backend).
pub fn device() -> Device {
    Device::flex()
}

/// Waits for queued work on `device` (a no-op on the CPU backend, needed on GPUs).
pub fn sync(device: &Device) {
    let _ = device.sync();
}

/// The backend's large-matmul rate in GFLOP/s: best of `reps` runs of
/// `[1, 1024, 2048] x [2048, 2048]` (the shape class of the DiT's projections).
pub fn matmul_gflops(device: &Device, reps: usize) -> f64 {
    let (m, k, n) = (1024usize, 2048usize, 2048usize);
    let a = Tensor::<3>::random([1, m, k], Distribution::Default, device);
    let b = Tensor::<3>::random([1, k, n], Distribution::Default, device);
    // Warm up.
    let _ = a.clone().matmul(b.clone()).into_data();
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let c = a.clone().matmul(b.clone());
        let _ = c.into_data();
        best = best.min(t.elapsed());
    }
    2.0 * (m * k * n) as f64 / best.as_secs_f64() / 1e9
}

/// Threads the CPU backend's pool uses.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Prints one report line: stage, time, achieved GFLOP/s and the roofline from the same run.
pub fn report(stage: &str, seconds: f64, flops: f64, matmul_gflops: f64) {
    let achieved = flops / seconds / 1e9;
    println!(
        "REPORT {stage}: {seconds:.3} s, {achieved:.1} GFLOP/s ({:.0}% of the {matmul_gflops:.1} GFLOP/s matmul roofline), {} threads",
        100.0 * achieved / matmul_gflops,
        threads()
    );
}

/// Times `f` once (after it has run `warmup` times) and returns seconds.
pub fn time_once<T>(warmup: usize, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..warmup {
        let _ = f();
    }
    let t = Instant::now();
    let _ = f();
    t.elapsed().as_secs_f64()
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current resident set size of this process in bytes (Linux `VmRSS`), if available.
pub fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Replaces every float parameter of `module` with seeded normal values scaled by
/// `1 / sqrt(fan_in)` (fan_in = elements / first dimension), so full-size benches run on
/// O(1) activations like a trained model would, without any weight file.
pub fn randomize<M: burn::module::Module>(module: M, seed: u64) -> M {
    use audiox_core::noise::{NoiseSource, SeededNoise};
    use burn::module::{ModuleMapper, Param};
    use burn::tensor::TensorData;

    struct Randomizer(SeededNoise);
    impl ModuleMapper for Randomizer {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let shape = param.lazy_shape().to_vec();
            let device = param.lazy_device();
            let n: usize = shape.iter().product();
            let fan_in = (n / shape.first().copied().unwrap_or(1).max(1)).max(1);
            let scale = 1.0 / (fan_in as f32).sqrt();
            let values: Vec<f32> = self
                .0
                .normal("bench weights", &[n])
                .expect("seeded noise cannot fail")
                .into_iter()
                .map(|x| x * scale)
                .collect();
            let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), &device);
            let id = param.id;
            param.transform_for_load(tensor, id)
        }
    }
    module.map(&mut Randomizer(SeededNoise::new(seed)))
}
