"""Measuring instead of claiming: the timing harness (``timing``: warm-up,
synchronisation, median and spread, sequential loops, FLOP counts), the
``minigen bench`` command that times autoregressive against diffusion sampling
(``ar_vs_diffusion``), and PyTorch twins of the reference networks
(``torch_twins``, only with the bench extra installed). ``report`` writes
their Markdown tables and JSON results."""
