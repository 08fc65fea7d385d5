//! Behaviour of the DiT and the MAF block beyond single-fixture parity: the per-request cache,
//! input validation, and loading the official torch checkpoints (prefix rule, bf16, the bundle
//! model with its own sizes).

use std::collections::BTreeMap;

use audiox_core::Error;
use audiox_core::fixtures::{Check, Fixture, FixtureSet, assert_all_pass, config_file_section};
use audiox_core::tensor::{from_dyn, to_vec};
use audiox_core::weights::{Component, StateDict, WeightSource, resolve_official_keys};
use audiox_mmdit::parity::{
    COND_DIM, DIT_SECTION, MAF_SECTION, dit_config, load_fixture_dit, load_fixture_maf, maf_config,
};
use audiox_mmdit::{Dit, DitConfig, MafBlock, MafBlockConfig, MmditDenoiser, Trace};
use audiox_sampler::Denoiser;
use burn::tensor::{Device, Tensor};

fn set() -> FixtureSet {
    FixtureSet::open_default().expect("fixture set")
}

fn fixture(name: &str) -> Option<Fixture> {
    let set = set();
    set.contains(name)
        .then(|| set.fixture(name).expect("fixture"))
}

fn tensor<const D: usize>(fx: &Fixture, name: &str, device: &Device) -> Tensor<D> {
    let t = fx.f32(name).unwrap();
    from_dyn(t.values, &t.shape, device).unwrap()
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// One prepared conditioning serves several steps with other latents and times: each result
/// equals the uncached call, and reusing it changes nothing.
#[test]
fn cached_conditioning_equals_an_uncached_forward() {
    let Some(fx) = fixture("mmdit_forward") else {
        return;
    };
    let device = Device::flex();
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let ctx: Tensor<3> = tensor(&fx, "mid.cross_attn_cond", &device);
    let x: Tensor<3> = tensor(&fx, "in.x", &device);
    let prepared = dit.prepare(ctx.clone()).unwrap();
    let steps = [
        (x.clone(), 1.0f32),
        (x.clone().mul_scalar(0.5).add_scalar(0.1), 0.75),
        (x.clone().flip([2]), 0.25),
    ];
    let mut first = None;
    for (xi, ti) in steps.iter().cloned() {
        let t = Tensor::<1>::from_floats([ti], &device);
        let cached = dit.forward(xi.clone(), t.clone(), &prepared).unwrap();
        let uncached = dit.forward_with_context(xi, t, ctx.clone()).unwrap();
        let err = max_abs_diff(cached.clone(), uncached);
        assert!(err <= 1e-6, "t = {ti}: cached vs uncached {err}");
        first.get_or_insert(cached);
    }
    // The first step again, after the conditioning served other steps.
    let again = dit
        .forward(x, Tensor::from_floats([1.0], &device), &prepared)
        .unwrap();
    assert_eq!(to_vec(again), to_vec(first.unwrap()));
}

/// The per-position conditioning exposed for training is the sequence the blocks' adaLN maps
/// read: the traced `proj_mm_seq_len` output of a prepare, position-major.
#[test]
fn the_conditioning_sequence_is_what_prepare_modulates_from() {
    let Some(fx) = fixture("mmdit_forward") else {
        return;
    };
    let device = Device::flex();
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let ctx: Tensor<3> = tensor(&fx, "mid.cross_attn_cond", &device);
    let mut trace = Trace::new();
    dit.prepare_traced(ctx.clone(), &mut trace).unwrap();
    let traced = trace.get("mid.proj_mm_seq_len").unwrap();
    let sequence = dit.conditioning_sequence(ctx).unwrap();
    let [b, positions, width] = sequence.dims();
    assert_eq!(positions, dit.latent_length() + 1);
    assert_eq!(width, dit.width());
    // Traced [B, E, L + 1]; the sequence [B, L + 1, E].
    assert_eq!(traced.shape, vec![b, width, positions]);
    let values = to_vec(sequence);
    for (i, &v) in traced.values.iter().enumerate() {
        let (e, p) = ((i / positions) % width, i % positions);
        let bi = i / (positions * width);
        assert_eq!(
            v,
            values[(bi * positions + p) * width + e],
            "batch {bi} channel {e} position {p}"
        );
    }
    let [n_ctx, d] = dit.context_shape();
    expect_input_shape(
        "sequence context",
        dit.conditioning_sequence(Tensor::zeros([1, n_ctx + 1, d], &device)),
    );
}

/// Preparing from the conditioning sequence gives the same velocities as preparing from the
/// context; a changed sequence changes them; wrong shapes are refused.
#[test]
fn prepare_sequence_equals_prepare_from_the_context() {
    let Some(fx) = fixture("mmdit_forward") else {
        return;
    };
    let device = Device::flex();
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let ctx: Tensor<3> = tensor(&fx, "mid.cross_attn_cond", &device);
    let x: Tensor<3> = tensor(&fx, "in.x", &device);
    let t = Tensor::<1>::from_floats([0.6], &device);
    let sequence = dit.conditioning_sequence(ctx.clone()).unwrap();
    let from_context = dit.forward(x.clone(), t.clone(), &dit.prepare(ctx).unwrap());
    let from_sequence = dit.forward(
        x.clone(),
        t.clone(),
        &dit.prepare_sequence(sequence.clone()).unwrap(),
    );
    let err = max_abs_diff(from_context.unwrap(), from_sequence.unwrap());
    assert!(err <= 1e-6, "sequence vs context: {err}");
    // One position told something else: the velocity moves.
    let [b, positions, width] = sequence.dims();
    let bump = Tensor::<3>::zeros([b, 1, width], &device).add_scalar(1.0);
    let changed = Tensor::cat(
        vec![
            sequence.clone().narrow(1, 0, 1),
            sequence.clone().narrow(1, 1, 1) + bump,
            sequence.clone().narrow(1, 2, positions - 2),
        ],
        1,
    );
    let moved = dit
        .forward(
            x.clone(),
            t.clone(),
            &dit.prepare_sequence(changed).unwrap(),
        )
        .unwrap();
    let base = dit
        .forward(x, t, &dit.prepare_sequence(sequence).unwrap())
        .unwrap();
    assert!(max_abs_diff(moved, base) > 1e-4);
    expect_input_shape(
        "sequence positions",
        dit.prepare_sequence(Tensor::zeros([b, positions + 1, width], &device)),
    );
    expect_input_shape(
        "sequence width",
        dit.prepare_sequence(Tensor::zeros([b, positions, width + 1], &device)),
    );
    expect_input_shape(
        "empty batch",
        dit.prepare_sequence(Tensor::zeros([0, positions, width], &device)),
    );
}

/// A denoiser prepared from conditioning sequences is the context-prepared one: guided, the
/// null sequence of an all-zero context gives the reference's unconditional branch.
#[test]
fn a_denoiser_from_sequences_equals_one_from_contexts() {
    let Some(fx) = fixture("mmdit_forward") else {
        return;
    };
    let device = Device::flex();
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let ctx: Tensor<3> = tensor(&fx, "mid.cross_attn_cond", &device);
    let x: Tensor<3> = tensor(&fx, "in.x", &device);
    let t = Tensor::<1>::from_floats([0.4], &device);
    let sequence = dit.conditioning_sequence(ctx.clone()).unwrap();
    let null = dit.conditioning_sequence(ctx.zeros_like()).unwrap();
    let guided = MmditDenoiser::with_guidance(&dit, ctx.clone()).unwrap();
    let from = MmditDenoiser::from_sequences(&dit, sequence.clone(), Some(null.clone())).unwrap();
    assert!(from.is_guided());
    let (c1, u1) = guided.velocity_pair(x.clone(), t.clone()).unwrap().unwrap();
    let (c2, u2) = from.velocity_pair(x.clone(), t.clone()).unwrap().unwrap();
    assert!(max_abs_diff(c1, c2) <= 1e-6);
    assert!(max_abs_diff(u1, u2) <= 1e-6);
    let plain = MmditDenoiser::new(&dit, ctx).unwrap();
    let from_plain = MmditDenoiser::from_sequences(&dit, sequence.clone(), None).unwrap();
    assert!(!from_plain.is_guided());
    assert!(
        from_plain
            .velocity_pair(x.clone(), t.clone())
            .unwrap()
            .is_none()
    );
    let err = max_abs_diff(
        plain.velocity(x.clone(), t.clone()).unwrap(),
        from_plain.velocity(x, t).unwrap(),
    );
    assert!(err <= 1e-6, "{err}");
    let [b, positions, width] = null.dims();
    expect_input_shape(
        "unconditional sequence",
        MmditDenoiser::from_sequences(
            &dit,
            sequence,
            Some(Tensor::zeros([b + 1, positions, width], &device)),
        ),
    );
}

fn expect_input_shape<T: std::fmt::Debug>(what: &str, r: audiox_core::Result<T>) {
    match r {
        Err(Error::InputShape { .. }) => {}
        other => panic!("{what}: expected an InputShape error, got {other:?}"),
    }
}

#[test]
fn wrong_shapes_are_typed_errors() {
    let Some(fx) = fixture("mmdit_forward") else {
        return;
    };
    let device = Device::flex();
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let (c, l) = (dit.io_channels(), dit.latent_length());
    let [n_ctx, d] = dit.context_shape();
    let t = Tensor::<1>::from_floats([0.5], &device);
    let ctx = Tensor::<3>::zeros([1, n_ctx, d], &device);
    let prepared = dit.prepare(ctx).unwrap();

    let x = |shape: [usize; 3]| Tensor::<3>::zeros(shape, &device);
    expect_input_shape(
        "latent length",
        dit.forward(x([1, c, l + 1]), t.clone(), &prepared),
    );
    expect_input_shape(
        "channels",
        dit.forward(x([1, c + 1, l]), t.clone(), &prepared),
    );
    expect_input_shape(
        "time per item",
        dit.forward(
            x([1, c, l]),
            Tensor::from_floats([0.5, 0.5], &device),
            &prepared,
        ),
    );
    expect_input_shape(
        "batch vs prepared",
        dit.forward(
            x([2, c, l]),
            Tensor::from_floats([0.5, 0.5], &device),
            &prepared,
        ),
    );
    expect_input_shape("context tokens", dit.prepare(x([1, n_ctx + 1, d])));
    expect_input_shape("context width", dit.prepare(x([1, n_ctx, d + 1])));
    expect_input_shape("empty batch", dit.prepare(x([0, n_ctx, d])));
    assert!(matches!(
        prepared.narrow_batch(0, 2),
        Err(Error::InvalidRequest(_))
    ));

    let maf = load_fixture_maf(&fx, &device).unwrap();
    let w = maf.width();
    let s = |b, n, w| Tensor::<3>::zeros([b, n, w], &device);
    expect_input_shape(
        "MAF width",
        maf.forward(s(1, 3, w), s(1, 2, w + 1), s(1, 2, w)),
    );
    expect_input_shape("MAF batch", maf.forward(s(1, 3, w), s(2, 2, w), s(1, 2, w)));
    expect_input_shape(
        "MAF empty stream",
        maf.forward(s(1, 3, w), s(1, 2, w), s(1, 0, w)),
    );
    // Token counts may differ between streams.
    assert_eq!(
        maf.forward(s(1, 3, w), s(1, 5, w), s(1, 1, w))
            .unwrap()
            .dims(),
        [1, 9, w]
    );
}

/// Official model key space of the DiT and the MAF block (for the checkpoint key rule).
fn model_keys(dit: &Dit, maf: &MafBlock) -> BTreeMap<String, Vec<usize>> {
    let mut keys: BTreeMap<String, Vec<usize>> =
        audiox_core::weights::official_names(dit, &Dit::layout())
            .into_iter()
            .map(|(k, v)| (format!("model.model.{k}"), v))
            .collect();
    keys.extend(
        maf.official_names()
            .into_iter()
            .map(|(k, v)| (format!("maf_block.{k}"), v)),
    );
    keys
}

/// Loads both models from a torch checkpoint through the official key rule; nothing under
/// their prefixes stays unused and every parameter is loaded.
fn load_checkpoint(
    path: &std::path::Path,
    dit: &DitConfig,
    maf: &MafBlockConfig,
    device: &Device,
) -> (Dit, MafBlock) {
    let dict = StateDict::open(path).unwrap();
    let keys = model_keys(&dit.init(device).unwrap(), &maf.init(device));
    let (resolved, _dropped) = resolve_official_keys(&dict, &keys);
    let (dit, report) = Dit::load(
        dit,
        &[WeightSource::with_prefix(&resolved, "model.model.")],
        device,
    )
    .unwrap();
    assert!(
        report.unused.is_empty() && report.missing.is_empty(),
        "{}",
        report.summary()
    );
    assert_eq!(report.applied.len(), 11 + 11 * dit.blocks.len() + 6);
    let (maf, report) = MafBlock::load(
        maf,
        &[WeightSource::with_prefix(&resolved, "maf_block.")],
        device,
    )
    .unwrap();
    assert!(
        report.unused.is_empty() && report.missing.is_empty(),
        "{}",
        report.summary()
    );
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.param == "bypass_gate_t" && a.keys == ["maf_block.bypass_gate_t"])
    );
    (dit, maf)
}

/// The student checkpoint container (flat torch pickle with stray prefixes and junk keys)
/// holds the weights of `mmdit_forward`: loading it reproduces that fixture's velocity; its
/// bfloat16 twin loads too and stays close.
#[test]
fn student_checkpoints_load_through_the_official_key_rule() {
    let (Some(fx), true) = (fixture("mmdit_forward"), set().contains("ckpt_formats")) else {
        return;
    };
    let device = Device::flex();
    let reference = load_fixture_dit(&fx, &device).unwrap();
    let fresh = || {
        (
            dit_config(&fx, reference.context_shape()[0]).unwrap(),
            maf_config(&fx).unwrap(),
        )
    };
    let run = |dit: &Dit, maf: &MafBlock| {
        let ctx = maf
            .forward(
                tensor(&fx, "in.text_tokens", &device),
                tensor(&fx, "in.video_tokens", &device),
                tensor(&fx, "in.audio_tokens", &device),
            )
            .unwrap();
        dit.forward_with_context(
            tensor(&fx, "in.x", &device),
            tensor(&fx, "in.t", &device),
            ctx,
        )
        .unwrap()
    };
    let ckpt = set().dir().join("ckpt");

    let (dit, maf) = fresh();
    let (dit, maf) = load_checkpoint(&ckpt.join("student_raw_f32.ckpt"), &dit, &maf, &device);
    let v = run(&dit, &maf);
    let check = fx.check("out.v", &v.dims(), &to_vec(v.clone())).unwrap();
    assert_all_pass("student_raw_f32.ckpt", &[check]);

    let (dit, maf) = fresh();
    let (dit, maf) = load_checkpoint(&ckpt.join("student_raw_bf16.ckpt"), &dit, &maf, &device);
    let err = max_abs_diff(run(&dit, &maf), v);
    assert!(err < 0.1, "bf16 weights: velocity differs by {err}");
}

/// The bundle (another size: L = 27, Nctx = 38, from its own config's sections and the
/// streams of its expected request): MAF output and every student step's velocity of a request.
#[test]
fn bundle_model_reproduces_a_request() {
    let set = set();
    let bundle = set.bundle_dir();
    let expected = bundle.join("expected");
    if !expected.join("text_only.json").exists() {
        return;
    }
    let device = Device::flex();
    let fx = Fixture::open(&expected, "text_only").unwrap();
    // The bundle's own sections; Nctx is the three streams' tokens side by side.
    let config = bundle.join("config.json");
    let context_tokens: usize = ["out.text_tokens", "out.video_tokens", "out.audio_tokens"]
        .iter()
        .map(|name| fx.f32(name).unwrap().shape[1])
        .sum();
    let dit = config_file_section::<DitConfig>(&config, DIT_SECTION)
        .unwrap()
        .with_context_tokens(context_tokens);
    let maf = config_file_section::<MafBlockConfig>(&config, MAF_SECTION)
        .unwrap()
        .with_width(config_file_section(&config, COND_DIM).unwrap());
    let (dit, maf) = load_checkpoint(
        &bundle.join("audiox_turbo/audiox_turbo.ckpt"),
        &dit,
        &maf,
        &device,
    );

    let ctx = maf
        .forward(
            tensor(&fx, "out.text_tokens", &device),
            tensor(&fx, "out.video_tokens", &device),
            tensor(&fx, "out.audio_tokens", &device),
        )
        .unwrap();
    let mut checks = vec![
        fx.check("out.cross_attn_cond", &ctx.dims(), &to_vec(ctx.clone()))
            .unwrap(),
    ];
    let denoiser = MmditDenoiser::new(&dit, ctx).unwrap();
    let z: Tensor<4> = tensor(&fx, "mid.step_z", &device);
    let t: Tensor<2> = tensor(&fx, "mid.step_t", &device);
    let v_all = fx.f32("mid.step_v").unwrap();
    let (atol, rtol) = fx.tolerance("mid.step_v").unwrap();
    let [steps, b, c, l] = z.dims();
    for i in 0..steps {
        let v = denoiser
            .velocity(
                z.clone().narrow(0, i, 1).reshape([b, c, l]),
                t.clone().narrow(0, i, 1).reshape([b]),
            )
            .unwrap();
        let n = b * c * l;
        checks.push(Check::compare(
            &format!("mid.step_v[{i}]"),
            &[b, c, l],
            &v_all.values[i * n..(i + 1) * n],
            &v.dims(),
            &to_vec(v),
            atol,
            rtol,
        ));
    }
    for c in &checks {
        println!("{c}");
    }
    assert_all_pass("bundle text_only", &checks);
}

/// A stored tensor: name, shape, values.
type Stored = (String, Vec<usize>, Vec<f32>);
/// Rewrites (or drops) one stored tensor.
type Edit<'a> = &'a dyn Fn(&str, Vec<usize>, Vec<f32>) -> Option<Stored>;

/// The scalar bypass gates: a missing or non-scalar gate is a typed error naming the key.
#[test]
fn bad_bypass_gates_are_typed_errors() {
    let Some(fx) = fixture("maf_block") else {
        return;
    };
    let device = Device::flex();
    let config = maf_config(&fx).unwrap();
    let tensors = |edit: Edit<'_>| {
        let weights = fx.weights();
        let list = weights
            .keys()
            .filter(|k| k.starts_with("maf_block."))
            .filter_map(|k| {
                let (shape, values) = weights.read_f32(k).unwrap();
                edit(k, shape, values)
            })
            .collect();
        StateDict::from_f32("memory", list).unwrap()
    };
    let load = |dict: &StateDict| {
        MafBlock::load(
            &config,
            &[WeightSource::with_prefix(dict, "maf_block.")],
            &device,
        )
        .map(|_| ())
    };
    let missing =
        tensors(&|k, s, v| (k != "maf_block.bypass_gate_t").then(|| (k.to_string(), s, v)));
    match load(&missing) {
        Err(Error::MissingWeight { key, .. }) => assert_eq!(key, "bypass_gate_t"),
        other => panic!("expected MissingWeight, got {other:?}"),
    }
    let vector = tensors(&|k, s, v| {
        Some(if k == "maf_block.bypass_gate_a" {
            (k.to_string(), vec![2], vec![v[0], v[0]])
        } else {
            (k.to_string(), s, v)
        })
    });
    match load(&vector) {
        Err(Error::ShapeMismatch { key, found, .. }) => {
            assert_eq!((key.as_str(), found), ("maf_block.bypass_gate_a", vec![2]))
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    // The untouched set loads.
    load(&tensors(&|k, s, v| Some((k.to_string(), s, v)))).unwrap();
}

/// Releasing the dead weights changes no output bit and frees exactly the cross-attention
/// query projections, the value halves of the key/value projections and the two unused MLPs.
#[test]
fn releasing_the_dead_weights_changes_nothing_computed() {
    use burn::module::Module;
    let Some(fx) = fixture("mmdit_forward") else {
        return;
    };
    let device = Device::flex();
    let dit = load_fixture_dit(&fx, &device).unwrap();
    let e = dit.width();
    let blocks = dit.blocks.len();
    let unused: usize = [&dit.to_cond_embed, &dit.to_global_embed]
        .iter()
        .map(|m| m.num_params())
        .sum();
    let before_params = dit.num_params();
    let ctx = tensor::<3>(&fx, "mid.cross_attn_cond", &device);
    let x = tensor::<3>(&fx, "in.x", &device);
    let t = tensor::<1>(&fx, "in.t", &device);
    let want = to_vec(
        dit.forward(x.clone(), t.clone(), &dit.prepare(ctx.clone()).unwrap())
            .unwrap(),
    );

    let slim = dit.without_dead_weights();
    assert_eq!(
        before_params - slim.num_params(),
        blocks * 2 * e * e + unused,
        "released parameter count"
    );
    let got = to_vec(slim.forward(x, t, &slim.prepare(ctx).unwrap()).unwrap());
    assert_eq!(got, want);
}
