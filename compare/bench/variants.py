"""The variants ``bench`` times, and the size of one timed block."""

TORCH_VARIANTS = ("torch-eager", "torch-compile", "torch-cudagraphs")  # the ratios' reference
JAX_VARIANTS = ("jax-nnx-jit", "jax-steps", "jax-scan")
VARIANTS = TORCH_VARIANTS + JAX_VARIANTS + ("lesson",)
WORKER_VARIANTS = {"torch": TORCH_VARIANTS + ("lesson",), "jax": JAX_VARIANTS}
FULL_BATCH_STEPS = 500  # one repeat of a full-batch task (flower-net's lesson runs 10,000)
MIN_BLOCK_STEPS = 50  # a block is one epoch, or this many steps of a shorter one (pos-tagger: 2)
QUICK_STEPS, QUICK_REPEATS, REPEATS = 4, 2, 5

DESCRIPTIONS = {
    "torch-eager": "the tutorial's train_step per batch, batches on the device",
    "torch-compile": "torch.compile(train_step), Inductor (GANs: each net compiled)",
    "torch-cudagraphs": 'torch.compile(train_step, mode="reduce-overhead"): CUDA graphs',
    "jax-nnx-jit": "the tutorial's @nnx.jit train_step per batch, batches on the device",
    "jax-steps": "one jitted pure step per Python iteration (graph split once)",
    "jax-scan": "all the block's steps as one jitted lax.scan",
    "lesson": "the lesson as written: DataLoader, per-sample transforms, .to(device), .item()",
}
