"""PyTorch references of the tutorial models: idiomatic, faithful to each lesson.

Never imports jax or compare: a state dict saved by the lesson's own code loads here unchanged.
"""
