//! The denoiser against the sampler fixtures: every step's velocity of the 4-step student
//! (`dmd_sampling`, batch 2, conditional only) and the teacher's batched classifier-free
//! guidance (`teacher_rf_cfg`: conditional and null branches as one batch of 2B).

use audiox_core::fixtures::{Check, Fixture, FixtureSet, assert_all_pass};
use audiox_core::tensor::{from_dyn, to_vec};
use audiox_mmdit::MmditDenoiser;
use audiox_mmdit::parity::{load_fixture_dit, load_fixture_maf};
use audiox_sampler::Denoiser;
use burn::tensor::{Device, Tensor};

fn fixture(name: &str) -> Option<Fixture> {
    let set = FixtureSet::open_default().expect("fixture set");
    set.contains(name)
        .then(|| set.fixture(name).expect("fixture"))
}

fn tensor<const D: usize>(fx: &Fixture, name: &str, device: &Device) -> Tensor<D> {
    let t = fx.f32(name).unwrap();
    from_dyn(t.values, &t.shape, device).unwrap()
}

/// Compares `got` with step `i` of the stacked fixture tensor `name` `[steps, ...]`.
fn check_step<const D: usize>(fx: &Fixture, name: &str, i: usize, got: Tensor<D>) -> Check {
    let want = fx.f32(name).unwrap();
    let per_step: usize = want.shape[1..].iter().product();
    let (atol, rtol) = fx.tolerance(name).unwrap();
    Check::compare(
        &format!("{name}[{i}]"),
        &want.shape[1..],
        &want.values[i * per_step..(i + 1) * per_step],
        &got.dims(),
        &to_vec(got),
        atol,
        rtol,
    )
}

fn context(fx: &Fixture, device: &Device) -> Tensor<3> {
    let maf = load_fixture_maf(fx, device).unwrap();
    maf.forward(
        tensor(fx, "in.text_tokens", device),
        tensor(fx, "in.video_tokens", device),
        tensor(fx, "in.audio_tokens", device),
    )
    .unwrap()
}

#[test]
fn student_velocity_at_every_step() {
    let Some(fx) = fixture("dmd_sampling") else {
        return;
    };
    let device = Device::flex();
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let ctx = context(&fx, &device);
    let mut checks = vec![
        fx.check("mid.cross_attn_cond", &ctx.dims(), &to_vec(ctx.clone()))
            .unwrap(),
    ];
    let denoiser = MmditDenoiser::new(&dit, ctx).unwrap();
    assert!(!denoiser.is_guided());
    let z: Tensor<4> = tensor(&fx, "mid.step_z", &device);
    let t: Tensor<2> = tensor(&fx, "mid.step_t", &device);
    let [steps, b, c, l] = z.dims();
    for i in 0..steps {
        let zi = z.clone().narrow(0, i, 1).reshape([b, c, l]);
        let ti = t.clone().narrow(0, i, 1).reshape([b]);
        assert!(
            denoiser
                .velocity_pair(zi.clone(), ti.clone())
                .unwrap()
                .is_none()
        );
        let v = denoiser.velocity(zi, ti).unwrap();
        checks.push(check_step(&fx, "mid.step_v", i, v));
    }
    for c in &checks {
        println!("{c}");
    }
    assert_all_pass("dmd_sampling", &checks);
}

#[test]
fn teacher_guidance_pair_at_every_step() {
    let Some(fx) = fixture("teacher_rf_cfg") else {
        return;
    };
    let device = Device::flex();
    let cfg_scale = fx.field("cfg_scale").unwrap().as_f64().unwrap() as f32;
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let denoiser = MmditDenoiser::with_guidance(&dit, context(&fx, &device)).unwrap();
    assert!(denoiser.is_guided());
    let x: Tensor<4> = tensor(&fx, "mid.step_x", &device);
    let t: Tensor<2> = tensor(&fx, "mid.step_t", &device);
    let [steps, b, c, l] = x.dims();
    let mut checks = Vec::new();
    for i in 0..steps {
        let xi = x.clone().narrow(0, i, 1).reshape([b, c, l]);
        let ti = t.clone().narrow(0, i, 1).reshape([b]);
        let (cond, uncond) = denoiser
            .velocity_pair(xi.clone(), ti.clone())
            .unwrap()
            .unwrap();
        if i == 0 {
            let name = "mid.step0_v_cond";
            checks.push(fx.check(name, &cond.dims(), &to_vec(cond.clone())).unwrap());
            let name = "mid.step0_v_uncond";
            checks.push(
                fx.check(name, &uncond.dims(), &to_vec(uncond.clone()))
                    .unwrap(),
            );
            // The conditional-only call of a guided denoiser is the first half of the pair.
            let alone = to_vec(denoiser.velocity(xi, ti).unwrap());
            let err = alone
                .iter()
                .zip(to_vec(cond.clone()))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-5, "velocity vs velocity_pair.0: {err}");
        }
        let guided = uncond.clone() + (cond - uncond).mul_scalar(cfg_scale);
        checks.push(check_step(&fx, "mid.step_v_cfg", i, guided));
    }
    for c in &checks {
        println!("{c}");
    }
    assert_all_pass("teacher_rf_cfg", &checks);
}
