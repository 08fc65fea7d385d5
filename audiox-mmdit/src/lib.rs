//! The AudioX-Turbo diffusion transformer (MMDiT) and its multimodal fusion (MAF) block.
