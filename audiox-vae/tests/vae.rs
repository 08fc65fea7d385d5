//! VAE structure (full size, against the manifest), chunked decoding, and bad input.

use audiox_core::Error;
use audiox_core::fixtures::{FixtureSet, manifest_dir, official_config_section};
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_dyn, to_vec};
use audiox_core::weights::{Component, WeightSource, compare_with_manifest, read_manifest};
use audiox_vae::parity::{VAE_SECTION, vae_config};
use audiox_vae::{ChunkedDecode, VaeConfig};
use burn::tensor::{Device, Tensor};

/// The VAE built at the official config has exactly the names and shapes of `vae.json`
/// (weight-normalised kernels map to their `weight_g`/`weight_v` pairs). Nothing is allocated.
#[test]
fn full_size_vae_matches_the_manifest() {
    let config: VaeConfig = official_config_section(VAE_SECTION).unwrap();
    let vae = config.init(&Device::flex());
    let manifest = read_manifest(manifest_dir().join("vae.json")).unwrap();
    let diff = compare_with_manifest(&vae, &vae.layout(), &manifest);
    assert!(diff.is_empty(), "{diff}");
    assert_eq!(vae.decoder.upsampling_ratio(), 2048);
    assert_eq!(vae.encoder.output_length(441_000), 215);
    // The default chunking's overlap covers the full-size decoder's receptive field.
    assert_eq!(vae.decoder.receptive_radius(), 11);
    assert!(ChunkedDecode::default().overlap >= vae.decoder.receptive_radius());
}

fn tiny_vae(device: &Device) -> audiox_vae::Vae {
    let set = FixtureSet::open_default().unwrap();
    let dec = set.fixture("vae_decoder").unwrap();
    let enc = set.fixture("vae_encoder").unwrap();
    let config = vae_config(&dec).unwrap();
    let (vae, report) = audiox_vae::Vae::load(
        &config,
        &[
            WeightSource::new(dec.weights()),
            WeightSource::new(enc.weights()),
        ],
        device,
    )
    .unwrap();
    assert!(!report.applied.is_empty());
    vae
}

/// Chunked decoding equals the whole decode once the overlap covers the receptive field; with
/// less overlap the error falls as the overlap grows (measured here on seeded random latents).
#[test]
fn chunked_decode_error_against_whole_decode() {
    let device = Device::flex();
    let vae = tiny_vae(&device);
    let c = vae.decoder.latent_dim();
    let values = SeededNoise::new(3).normal("latent", &[2, c, 61]).unwrap();
    let latent = from_dyn::<3>(values, &[2, c, 61], &device).unwrap();
    let whole = to_vec(vae.decode(latent.clone()).unwrap());
    let peak = whole.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let err = |chunking| {
        let chunked = to_vec(
            vae.decoder
                .forward_chunked(latent.clone(), chunking)
                .unwrap(),
        );
        assert_eq!(chunked.len(), whole.len());
        chunked
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    // Overlap larger than the receptive field: identical up to float noise.
    assert!(
        err(ChunkedDecode {
            chunk: 8,
            overlap: 30
        }) <= 1e-5 * peak.max(1.0)
    );
    // No overlap: the seams are visibly wrong (so the test can tell the two apart).
    let no_overlap = err(ChunkedDecode {
        chunk: 8,
        overlap: 0,
    });
    assert!(no_overlap > 1e-3 * peak, "{no_overlap}");
    // The error falls as the overlap grows (printed for docs/performance.md).
    let errors: Vec<f32> = [0, 2, 4, 8, 16, 24]
        .iter()
        .map(|&overlap| err(ChunkedDecode { chunk: 16, overlap }) / peak)
        .collect();
    println!("relative max error for chunk 16, overlap 0/2/4/8/16/24: {errors:?}");
    assert!(errors[3] > errors[4] && errors[4] > errors[5], "{errors:?}");
    assert!(errors[4] < 1e-2, "{errors:?}");
    // Overlap = the computed receptive radius reproduces the whole decode.
    let exact = ChunkedDecode::exact(&vae.decoder, 16);
    assert!(
        err(exact) <= 1e-5 * peak.max(1.0),
        "radius {}",
        exact.overlap
    );
    // A chunk of zero frames is refused.
    assert!(
        vae.decoder
            .forward_chunked(
                latent,
                ChunkedDecode {
                    chunk: 0,
                    overlap: 1
                }
            )
            .is_err()
    );
}

/// Decoding only the leading frames `frames_for_samples` names gives the whole decode's first
/// samples up to float rounding (the products' blocking depends on the length), for cuts
/// anywhere in the latent; a cut at the kept samples' end, without the receptive radius, is
/// visibly wrong there.
#[test]
fn a_prefix_decode_equals_the_whole_decode_where_it_is_kept() {
    let device = Device::flex();
    let vae = tiny_vae(&device);
    let decoder = &vae.decoder;
    let (c, len) = (decoder.latent_dim(), 61);
    let ratio = decoder.upsampling_ratio();
    let radius = decoder.receptive_radius();
    assert!(radius > 0 && len > radius + 12, "radius {radius}");
    let values = SeededNoise::new(5).normal("latent", &[2, c, len]).unwrap();
    let latent = from_dyn::<3>(values, &[2, c, len], &device).unwrap();
    let whole = vae.decode(latent.clone()).unwrap();
    let peak = to_vec(whole.clone())
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let error = |prefix: Tensor<3>, samples: usize| {
        let a = to_vec(prefix.narrow(2, 0, samples));
        let b = to_vec(whole.clone().narrow(2, 0, samples));
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
            / peak
    };
    for samples in [1, 3 * ratio + 1, 10 * ratio, (len - radius - 1) * ratio - 1] {
        let frames = decoder.frames_for_samples(samples, len);
        assert!(frames < len, "{samples} samples: {frames} frames");
        let prefix = decoder.forward(latent.clone().narrow(2, 0, frames));
        assert_eq!(prefix.dims()[2], frames * ratio);
        let e = error(prefix, samples);
        assert!(
            e <= 1e-6,
            "{samples} samples from {frames} frames: relative error {e}"
        );
    }
    // The whole latent when the samples reach its end.
    assert_eq!(decoder.frames_for_samples(len * ratio, len), len);
    assert_eq!(decoder.frames_for_samples(usize::MAX, len), len);
    // The radius is needed: without it the last kept samples are wrong.
    let e = error(decoder.forward(latent.clone().narrow(2, 0, 10)), 10 * ratio);
    assert!(
        e > 1e-3,
        "a cut at the kept samples' end: relative error {e}"
    );
}

/// The hook before each chunk sees every chunk in order, and its error stops the decode
/// (how the pipeline honours cancellation between chunks).
#[test]
fn the_chunk_hook_runs_before_every_chunk_and_can_stop_the_decode() {
    let device = Device::flex();
    let vae = tiny_vae(&device);
    let c = vae.decoder.latent_dim();
    let (len, chunk) = (
        4 * vae.decoder.receptive_radius() + 3,
        vae.decoder.receptive_radius(),
    );
    let chunking = ChunkedDecode { chunk, overlap: 1 };
    let chunks = len.div_ceil(chunk);
    let latent = Tensor::<3>::zeros([1, c, len], &device);
    let mut seen = Vec::new();
    let out = vae
        .decoder
        .forward_chunked_with(latent.clone(), chunking, &mut |i, n| {
            seen.push((i, n));
            Ok(())
        })
        .unwrap();
    assert_eq!(out.dims()[2], len * vae.decoder.upsampling_ratio());
    assert_eq!(seen, (0..chunks).map(|i| (i, chunks)).collect::<Vec<_>>());
    // Stop before the third chunk: the hook's error comes back, and no later chunk is asked.
    let mut asked = 0;
    let err = vae
        .decoder
        .forward_chunked_with(latent.clone(), chunking, &mut |i, n| {
            asked += 1;
            if i == 2 {
                Err(audiox_core::Error::Cancelled {
                    completed_steps: 4,
                    total_steps: 4,
                })
            } else {
                assert!(i < 2 && n == chunks);
                Ok(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, audiox_core::Error::Cancelled { .. }), "{err}");
    assert_eq!(asked, 3);
    // A latent that fits one chunk asks once.
    let mut asked = Vec::new();
    vae.decoder
        .forward_chunked_with(latent.narrow(2, 0, chunk), chunking, &mut |i, n| {
            asked.push((i, n));
            Ok(())
        })
        .unwrap();
    assert_eq!(asked, vec![(0, 1)]);
}

#[test]
fn wrong_input_shapes_are_typed_errors() {
    let device = Device::flex();
    let vae = tiny_vae(&device);
    let c = vae.decoder.latent_dim();
    let bad_latent = Tensor::<3>::zeros([1, c + 1, 4], &device);
    assert!(matches!(
        vae.decode(bad_latent),
        Err(Error::InputShape { .. })
    ));
    let empty = Tensor::<3>::zeros([1, c, 0], &device);
    assert!(matches!(vae.decode(empty), Err(Error::InputShape { .. })));
    let mono = Tensor::<3>::zeros([1, 1, 64], &device);
    let mut noise = SeededNoise::new(1);
    assert!(matches!(
        vae.encode(mono, &mut noise),
        Err(Error::InputShape { .. })
    ));
    let too_short = Tensor::<3>::zeros([1, 2, 1], &device);
    assert!(matches!(
        vae.encode(too_short, &mut noise),
        Err(Error::InputShape { .. })
    ));
}

/// Encoding then decoding runs end to end with a seeded source, deterministically.
#[test]
fn encode_is_deterministic_for_a_seed() {
    let device = Device::flex();
    let vae = tiny_vae(&device);
    let audio = from_dyn::<3>(
        (0..2 * 200).map(|i| (i as f32 * 0.05).sin()).collect(),
        &[1, 2, 200],
        &device,
    )
    .unwrap();
    let a = to_vec(vae.encode(audio.clone(), &mut SeededNoise::new(5)).unwrap());
    let b = to_vec(vae.encode(audio.clone(), &mut SeededNoise::new(5)).unwrap());
    let c = to_vec(vae.encode(audio, &mut SeededNoise::new(6)).unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
}

/// The silent-prompt shortcut: encoding zeros through a short input equals encoding the
/// whole length, for lengths where the shortcut applies and where it falls back.
#[test]
fn encoding_zeros_through_a_short_input_equals_the_whole_encoding() {
    let device = Device::flex();
    let vae = tiny_vae(&device);
    let encoder = &vae.encoder;
    let ratio = encoder.downsampling_ratio();
    let mut shortcut_taken = 0;
    for samples in [
        40 * ratio,
        88 * ratio,
        88 * ratio + 3,
        300 * ratio + ratio / 2,
        10 * ratio,
    ] {
        let frames = encoder.output_length(samples);
        if let Some((left, right)) = encoder.zero_input_edges(samples)
            && left + right + 2 < frames
        {
            shortcut_taken += 1;
        }
        let want =
            to_vec(encoder.forward(Tensor::zeros([1, encoder.channels_in(), samples], &device)));
        let got = encoder.forward_zeros(samples, &device);
        assert_eq!(got.dims()[2], frames, "{samples} samples");
        let got = to_vec(got);
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-6 * scale,
            "{samples} samples: max error {err} (scale {scale})"
        );
    }
    assert!(
        shortcut_taken >= 3,
        "the shortcut applied to {shortcut_taken} lengths"
    );
}

/// At full size the silent prompt's encoding needs only a few frames at each end.
#[test]
fn full_size_zero_input_edges_are_short() {
    let config: VaeConfig = official_config_section(VAE_SECTION).unwrap();
    let vae = config.init(&Device::flex());
    let (left, right) = vae.encoder.zero_input_edges(441_000).unwrap();
    assert!(
        left + right + 2 <= 20,
        "edges {left} + {right} of 215 frames"
    );
}
