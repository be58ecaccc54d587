"""Flax NNX + Optax twins of the tutorial models, jit-compiled.

Never imports torch or compare: each file mirrors its twin in ``torchref`` name for name.
"""
