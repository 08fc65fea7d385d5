//! Half precision (f16 as the device's float type) on the CPU backend, where burn's flex backend
//! computes in f16 as a GPU device under `--precision f16` does: every fixture of the vendored
//! tiny model (sizes from its fixtures and config) and a full generation stay finite and close
//! to the f32 reference, and stay f16 throughout.
//!
//! This is the only test of this binary: the device's default float type is fixed once per
//! process, before the first tensor exists.

use audiox::parity::{Outcome, run_bundle, run_fixture};
use audiox::{AudioX, Request};
use audiox_core::fixtures::{Criterion, FixtureSet, HALF_PEAK_FRACTION};
use audiox_core::tensor::to_vec;
use burn::tensor::{DType, Device, FloatDType};

#[test]
fn the_tiny_model_in_f16_is_finite_and_close_to_f32() {
    let mut device = Device::flex();
    assert!(device.supports_dtype(FloatDType::F16));
    device
        .configure(FloatDType::F16)
        .expect("no tensor exists yet on the CPU device of this test binary");

    // Every entry of the fixture set, under the half-precision rule: finite, and the worst
    // error at most 5 % of the f32 reference's peak. The T5 encoder fails it with `f32::MIN`
    // as mask value (-inf in f16, NaN rows) and every transformer with mixed f16 x f32 products.
    let set = FixtureSet::open_default().unwrap();
    let mut failures = Vec::new();
    let mut worst = (String::new(), 0.0f64);
    let mut passed = 0;
    for name in set.names() {
        let t = std::time::Instant::now();
        let outcomes = if name == "bundle" {
            run_bundle(&set, &device, Criterion::Half)
        } else {
            vec![(
                name.clone(),
                run_fixture(&set, &name, &device, Criterion::Half),
            )]
        };
        eprintln!("{name}: {:.1} s", t.elapsed().as_secs_f64());
        for (name, outcome) in outcomes {
            match &outcome {
                Outcome::Pass { closest, .. } => {
                    passed += 1;
                    eprintln!("PASS {name}: closest {closest}");
                    if closest.criterion == Criterion::Half {
                        let share = closest.max_abs_err / closest.ref_peak;
                        if share > worst.1 {
                            worst = (format!("{name} {}", closest.name), share);
                        }
                    }
                }
                Outcome::NotImplemented => eprintln!("not implemented: {name}"),
                _ => failures.push(format!("{name}: {outcome:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(passed > 0);
    eprintln!(
        "worst error: {} ({:.2} % of its peak)",
        worst.0,
        100.0 * worst.1
    );
    assert!(worst.1 <= HALF_PEAK_FRACTION);

    // A whole generation through the public API: every stage's output is f16 (no product
    // silently widened to f32) and finite.
    let model = AudioX::builder()
        .checkpoint_dir(set.bundle_dir())
        .device(device.clone())
        .build()
        .unwrap();
    let out = model
        .generate(
            Request::text("a dog barks twice")
                .seed(11)
                .keep_intermediates(true),
        )
        .unwrap();
    let i = out.intermediates.unwrap();
    for (stage, t) in [
        ("text tokens", i.text_tokens),
        ("context", i.context),
        ("latent", i.latent),
        ("decoded", i.decoded),
    ] {
        assert_eq!(t.dtype(), DType::F16, "{stage}");
        let values = to_vec(t);
        assert!(values.iter().all(|v| v.is_finite()), "{stage}");
        assert!(values.iter().any(|v| *v != 0.0), "{stage}");
    }
    for audio in &out.audio {
        assert!(audio.channels().iter().flatten().all(|v| v.is_finite()));
    }
}
