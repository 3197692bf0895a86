"""The models, built on the engine's Tensor API only (nn, functional, mg.* creation).

Autoregressive: ``pixelcnn`` (PixelCNN and Gated PixelCNN, exact likelihood,
naive and cached sampling) and ``pixelsnail`` (masked convolutions plus causal
attention, with a key/value cache for sampling). Diffusion: ``diffusion`` (the
Gaussian process: schedules, closed forms, posterior, sampling steps,
likelihood terms), ``unet`` (the denoising network) and ``ddpm`` (the module
that ties them together). Latent spaces: ``autoencoder`` (a VAE with Stable
Diffusion's latent scale, and a VQ-VAE with an EMA codebook, for two-stage models).
``classifier`` is the digit classifier that judges samples. ``inputs`` checks what
the models are given (images, labels, counts) and names any mistake before work
starts. Each family is built from one config dataclass (``config``: the pattern
and its helpers).
"""
