//! The samplers' arithmetic against the golden fixtures `dmd_sampling` and `teacher_rf_cfg`
//! (the set in `AUDIOX_FIXTURES_DIR`, or the vendored one), with the network replaced by the
//! velocities the reference recorded.

use audiox_core::fixtures::{Check, Fixture, FixtureSet, assert_all_pass};
use audiox_sampler::parity::{check_dmd_sampling, check_teacher_rf_cfg};
use audiox_sampler::{Sampler, Schedule, torch_linspace};
use burn::tensor::Device;

fn fixture(name: &str) -> Option<Fixture> {
    let set = FixtureSet::open_default().unwrap();
    if !set.contains(name) {
        eprintln!("fixture set {} has no {name}; skipped", set.dir().display());
        return None;
    }
    Some(set.fixture(name).unwrap())
}

fn compared(checks: &[Check]) -> Vec<&str> {
    checks.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn dmd_sampler_reproduces_the_reference_steps() {
    let Some(fx) = fixture("dmd_sampling") else {
        return;
    };
    let checks = check_dmd_sampling(&fx, &Device::flex()).unwrap();
    for c in &checks {
        eprintln!("{c}");
    }
    assert_eq!(
        compared(&checks),
        [
            "mid.t_schedule",
            "mid.step_z",
            "mid.step_t",
            "mid.step_x0",
            "out.latent"
        ]
    );
    assert_all_pass("dmd_sampling", &checks);
}

#[test]
fn guided_euler_reproduces_the_reference_steps() {
    let Some(fx) = fixture("teacher_rf_cfg") else {
        return;
    };
    let checks = check_teacher_rf_cfg(&fx, &Device::flex()).unwrap();
    for c in &checks {
        eprintln!("{c}");
    }
    assert_eq!(
        compared(&checks),
        [
            "mid.t_schedule",
            "mid.step_x",
            "mid.step_t",
            "mid.step_v_cfg",
            "out.latent"
        ]
    );
    assert_all_pass("teacher_rf_cfg", &checks);
}

#[test]
fn schedules_match_the_fixtures_bit_for_bit() {
    for name in ["dmd_sampling", "teacher_rf_cfg"] {
        let Some(fx) = fixture(name) else {
            continue;
        };
        let want = fx.f32("mid.t_schedule").unwrap().values;
        let steps = fx.field("steps").unwrap().as_u64().unwrap() as usize;
        let got = Schedule::linear(steps).times().unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{name}");
        assert_eq!(
            bits(&torch_linspace(1.0, 0.0, steps + 1)),
            bits(&want),
            "{name}"
        );
    }
}

#[test]
fn a_wrong_velocity_is_caught() {
    // The comparison is not vacuous: perturbing one recorded velocity moves the trajectory
    // out of tolerance.
    let Some(fx) = fixture("dmd_sampling") else {
        return;
    };
    let device = Device::flex();
    let steps = fx.f32("mid.step_v").unwrap();
    let per_step = steps.values.len() / steps.shape[0];
    let mut values = steps.values.clone();
    values[per_step + 3] += 1e-2; // step 1, one element
    let velocities = values
        .chunks(per_step)
        .map(|v| {
            audiox_core::tensor::from_dyn::<3>(v.to_vec(), &steps.shape[1..], &device).unwrap()
        })
        .collect();
    let replay = audiox_sampler::parity::ReplayDenoiser::velocities(velocities);
    let checks = audiox_sampler::parity::check_dmd_sampling_with(&fx, &device, &replay).unwrap();
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.name.clone())
        .collect();
    assert!(failed.contains(&"mid.step_v".to_string()), "{failed:?}");
    assert!(failed.contains(&"mid.step_x0".to_string()), "{failed:?}");
    assert!(failed.contains(&"out.latent".to_string()), "{failed:?}");
}

#[test]
fn unguided_euler_on_the_recorded_guided_velocities_gives_the_reference_latent() {
    // With guidance off the sampler takes the recorded guided velocity as the model's answer.
    let Some(fx) = fixture("teacher_rf_cfg") else {
        return;
    };
    let device = Device::flex();
    let v = fx.f32("mid.step_v_cfg").unwrap();
    let per_step = v.values.len() / v.shape[0];
    let velocities = v
        .values
        .chunks(per_step)
        .map(|s| audiox_core::tensor::from_dyn::<3>(s.to_vec(), &v.shape[1..], &device).unwrap())
        .collect();
    let replay = audiox_sampler::parity::ReplayDenoiser::velocities(velocities);
    let recorder = audiox_sampler::parity::Recorder::new(&replay);
    let steps = fx.field("steps").unwrap().as_u64().unwrap() as usize;
    let noise = fx.f32("in.noise").unwrap();
    let noise = audiox_core::tensor::from_dyn::<3>(noise.values, &noise.shape, &device).unwrap();
    let latent = audiox_sampler::Euler::new(steps)
        .sample(
            &recorder,
            noise,
            &mut audiox_core::noise::ReplayNoise::new(),
            &mut audiox_sampler::StepControl::new(),
        )
        .unwrap();
    replay.finish().unwrap();
    let xs: Vec<f32> = recorder
        .calls()
        .into_iter()
        .flat_map(|c| audiox_core::tensor::to_vec(c.x))
        .collect();
    let mut shape = vec![steps];
    shape.extend(&v.shape[1..]);
    let checks = vec![
        fx.check("mid.step_x", &shape, &xs).unwrap(),
        fx.check(
            "out.latent",
            &latent.dims(),
            &audiox_core::tensor::to_vec(latent),
        )
        .unwrap(),
    ];
    assert_all_pass("teacher_rf_cfg (guidance off)", &checks);
}
