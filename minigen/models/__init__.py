"""Models built on the engine: the digit classifier now; PixelCNN and DDPM next."""
