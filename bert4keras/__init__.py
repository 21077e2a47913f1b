"""bert4keras for Keras 3: transformer models, layers, tokenizers and training utilities.

Runs on the TensorFlow, JAX and PyTorch backends (choose with ``KERAS_BACKEND``).
"""

__version__ = "0.12.0.dev0"
