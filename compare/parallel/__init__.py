"""Data-parallel training (``--data-parallel N``) on each framework's own engine.

JAX: one ``Mesh`` over N devices, every global batch sharded along ``"data"``, the model and
optimizer state replicated, the tutorial's own jitted step inside one ``lax.scan``; several
hosts through ``jax.distributed.initialize``. torch: N processes, ``torch.distributed`` (gloo
on CPU, nccl on CUDA) and ``DistributedDataParallel``, started by the CLI or by ``torchrun``.
Each side on N devices must equal its single-device run (docs/SCALING.md).

The modules, by job: ``policy`` (what can run data-parallel, checked before JAX or any rank
starts), ``jax_mesh`` (the JAX side), ``torch_ddp`` (the torch side), ``launch`` (starting the
ranks; ``python -m compare.parallel`` is one rank), ``fields`` (what ``run`` and ``parity``
add: both sides on N devices, held against one). Batches whose size N does not divide (a
short last batch) run replicated on the JAX side: every device the whole batch, the
single-device result, no speed-up (counted in the output).
"""
