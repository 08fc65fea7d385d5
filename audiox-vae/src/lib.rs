//! audiox-vae
