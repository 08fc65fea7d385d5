//! The Oobleck VAE of AudioX-Turbo: encoder, decoder, VAE bottleneck and chunked decoding.
