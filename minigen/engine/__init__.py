"""The engine: everything minigen builds on, from NumPy arrays up to optimizers.

Read it in this order: ``backend`` (NumPy or CuPy, devices, seeded
generators), ``autograd`` (Tensor, Function, backward by generation),
``ops`` (elementwise, reduction, shape and indexing ops), ``creation``
(tensor, zeros, full, arange, randn ...), ``functional`` (conv2d, losses,
activations, normalisation, attention), ``nn`` (Module and layers),
``optim`` (SGD, Adam, EMA) and ``gradcheck``. The engine imports nothing else of minigen.
"""
