//! audiox-sampler
