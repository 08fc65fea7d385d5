//! Weight precisions on the tiny model in the official layout: f32 is the default and unchanged,
//! bf16 and int8 weights really are held in those types, and their output stays close to f32's.

use audiox::{AudioX, HeldBytes, Request, WeightPrecision};
use audiox_core::fixtures::FixtureSet;
use audiox_core::tensor::to_vec;

fn model(precision: Option<WeightPrecision>) -> AudioX {
    let set = FixtureSet::open_default().unwrap();
    let builder = AudioX::builder().checkpoint_dir(set.bundle_dir());
    match precision {
        Some(p) => builder.weights_precision(p),
        None => builder,
    }
    .build()
    .unwrap()
}

/// The request's latent and decoded audio.
fn outputs(model: &AudioX) -> (Vec<f32>, Vec<f32>) {
    let out = model
        .generate(
            Request::text("a dog barks twice")
                .seed(11)
                .keep_intermediates(true),
        )
        .unwrap();
    let i = out.intermediates.unwrap();
    (to_vec(i.latent), to_vec(i.decoded))
}

/// `||a - b|| / ||b||`.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut e, mut n) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        e += (x as f64 - y as f64).powi(2);
        n += (y as f64).powi(2);
    }
    (e / n).sqrt()
}

#[test]
fn f32_is_the_default_and_holds_everything_in_f32() {
    let default = model(None);
    assert_eq!(default.weights_precision(), WeightPrecision::F32);
    let held = default.held_weight_bytes();
    assert_eq!((held.bf16, held.int8, held.other), (0, 0, 0));
    assert!(held.f32 > 0);
    let explicit = model(Some(WeightPrecision::F32));
    assert_eq!(
        outputs(&default),
        outputs(&explicit),
        "f32 weights give bit-identical output"
    );
}

/// The DiT's bytes under `p`, and under f32 for the same model.
fn dit_bytes(p: WeightPrecision) -> (HeldBytes, HeldBytes, AudioX) {
    let reference = model(None).held_dit_bytes();
    let m = model(Some(p));
    (m.held_dit_bytes(), reference, m)
}

/// Under a reduced precision the VAE decoder holds its convolution kernels (most of its bytes)
/// in bf16, and nothing else changes type.
fn decoder_kernels_are_bf16(m: &AudioX) {
    let reduced = m.held_decoder_bytes();
    let f32 = model(None).held_decoder_bytes();
    assert_eq!((f32.bf16, f32.int8), (0, 0), "{f32:?}");
    assert_eq!(reduced.int8, 0, "{reduced:?}");
    assert_eq!(
        reduced.f32 + 2 * reduced.bf16,
        f32.f32,
        "{reduced:?} vs {f32:?}"
    );
    assert!(reduced.bf16 > 4 * reduced.f32, "{reduced:?}");
}

#[test]
fn bf16_holds_the_matmul_weights_in_bf16_and_stays_close() {
    let (bf16, f32, m) = dit_bytes(WeightPrecision::Bf16);
    assert!(bf16.bf16 > 0, "{bf16:?}");
    assert_eq!(bf16.int8, 0);
    // Every converted parameter takes exactly half its f32 bytes.
    assert_eq!(bf16.f32 + 2 * bf16.bf16, f32.f32, "{bf16:?} vs {f32:?}");
    // The matmul weights are most of the DiT.
    assert!(bf16.bf16 * 2 > bf16.f32 * 4, "{bf16:?}");
    // The conditioners' linear weights are bf16 too.
    let all = m.held_weight_bytes();
    assert!(all.bf16 > bf16.bf16, "{all:?} vs DiT {bf16:?}");
    decoder_kernels_are_bf16(&m);

    let (latent, decoded) = outputs(&m);
    let (want_latent, want_decoded) = outputs(&model(None));
    let (el, ed) = (
        relative_error(&latent, &want_latent),
        relative_error(&decoded, &want_decoded),
    );
    // Measured on the tiny model (`precision_error`, docs/performance.md "Precision"): latent
    // 5.3e-3, decoded audio 7.6e-3 with the native bf16 kernel (4.6e-3 and 7.1e-3 with the
    // widened weights of other CPUs); bounded with a margin of about 3x. A reduced precision
    // that changed nothing would give 0.
    assert!(el > 0.0 && el < 2e-2, "latent relative error {el}");
    assert!(ed > 0.0 && ed < 3e-2, "decoded relative error {ed}");
}

#[test]
fn int8_holds_the_dit_in_int8_and_stays_close() {
    let (int8, f32, m) = dit_bytes(WeightPrecision::Int8);
    assert!(int8.int8 > 0, "{int8:?}");
    assert_eq!(int8.bf16, 0, "the DiT has no bf16 weight under int8");
    let converted_f32_bytes = f32.f32 - int8.f32;
    // One byte per value and an f32 scale per block: well under half of f32.
    assert!(2 * int8.int8 < converted_f32_bytes, "{int8:?} vs {f32:?}");
    // The conditioners are bf16 under int8, and so are the decoder's kernels.
    assert!(m.held_weight_bytes().bf16 > 0);
    decoder_kernels_are_bf16(&m);

    let (latent, decoded) = outputs(&m);
    let (want_latent, want_decoded) = outputs(&model(None));
    let (el, ed) = (
        relative_error(&latent, &want_latent),
        relative_error(&decoded, &want_decoded),
    );
    // Measured: latent 1.33e-2, decoded audio 1.46e-2 with the VNNI kernel (9.6e-3 and 1.3e-2
    // dequantised); a margin of about 3x.
    assert!(el > 0.0 && el < 4e-2, "latent relative error {el}");
    assert!(ed > 0.0 && ed < 6e-2, "decoded relative error {ed}");
}

#[test]
fn reduced_precisions_are_deterministic() {
    for p in [WeightPrecision::Bf16, WeightPrecision::Int8] {
        let m = model(Some(p));
        assert_eq!(outputs(&m), outputs(&m), "{p}");
    }
}

#[test]
fn every_precision_decodes_whole_by_default_and_can_choose_exact_chunks() {
    use audiox::ChunkedDecode;
    let set = FixtureSet::open_default().unwrap();
    let builder = || {
        AudioX::builder()
            .checkpoint_dir(set.bundle_dir())
            .weights_precision(WeightPrecision::Int8)
    };
    assert_eq!(
        builder().build().unwrap().decode_chunking(),
        None,
        "int8 decodes whole"
    );
    assert_eq!(model(None).decode_chunking(), None, "f32 decodes whole");
    assert_eq!(model(Some(WeightPrecision::Bf16)).decode_chunking(), None);
    let low = builder()
        .exact_chunked_decode(audiox::LOW_MEMORY_DECODE_CHUNK)
        .build()
        .unwrap();
    let chunking = low.decode_chunking().expect("chunks asked for");
    assert_eq!(chunking.chunk, audiox::LOW_MEMORY_DECODE_CHUNK);
    assert!(chunking.overlap >= 1, "{chunking:?}");
    // The last decode choice wins.
    let whole = builder()
        .exact_chunked_decode(3)
        .whole_decode()
        .build()
        .unwrap();
    assert_eq!(whole.decode_chunking(), None);

    // Chunks far shorter than the latent, with the exact overlap: the whole decode's audio up
    // to float rounding, from the same latent. Checked with f32 weights, where float rounding
    // is all there is; with the bf16 decoder of a reduced precision, an activation whose two
    // f32 values (whole, chunked) differ in the last bit can round to neighbouring bf16 values,
    // so the two decodes agree to bf16's precision only (checked below).
    let f32_builder = || {
        AudioX::builder()
            .checkpoint_dir(set.bundle_dir())
            .weights_precision(WeightPrecision::F32)
    };
    let small = f32_builder().exact_chunked_decode(2).build().unwrap();
    assert_eq!(small.decode_chunking().unwrap().chunk, 2);
    let (latent, chunked) = outputs(&small);
    let (want_latent, want) = outputs(&model(None));
    let frames = latent.len() / small.config().model.io_channels;
    assert!(
        frames > 4,
        "the latent ({frames} frames) spans several chunks"
    );
    assert_eq!(latent, want_latent);
    let exact = relative_error(&chunked, &want);
    assert!(exact < 1e-5, "exact chunks: relative error {exact}");
    // Without overlap the seams show (so the comparison above can tell).
    let cut = f32_builder()
        .chunked_decode(ChunkedDecode {
            chunk: 2,
            overlap: 0,
        })
        .build()
        .unwrap();
    let seams = relative_error(&outputs(&cut).1, &want);
    assert!(seams > 1e-3, "no overlap: relative error {seams}");
    // int8 weights (bf16 decoder), the same chunks: within bf16's rounding of the whole decode
    // (measured 2.8e-3 / 3.4e-3 with the AVX512-BF16 / AMX kernels, below 1e-5 on the widened
    // and AVX2 paths, which do not round activations), and far closer than chunks without
    // overlap.
    let small = builder().exact_chunked_decode(2).build().unwrap();
    let (latent, chunked) = outputs(&small);
    let (want_latent, want) = outputs(&whole);
    assert_eq!(latent, want_latent);
    let close = relative_error(&chunked, &want);
    assert!(close < 1e-2, "int8, exact chunks: relative error {close}");
    let cut = builder()
        .chunked_decode(ChunkedDecode {
            chunk: 2,
            overlap: 0,
        })
        .build()
        .unwrap();
    let seams = relative_error(&outputs(&cut).1, &want);
    assert!(seams > 3.0 * close, "int8, no overlap: {seams} vs {close}");

    // Empty chunks are refused when the model is built.
    for bad in [
        builder().exact_chunked_decode(0),
        builder().chunked_decode(ChunkedDecode {
            chunk: 0,
            overlap: 4,
        }),
    ] {
        match bad.build() {
            Err(audiox::Error::InvalidRequest(m)) => assert!(m.contains("chunk"), "{m}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a chunk of 0 frames was accepted"),
        }
    }
}
