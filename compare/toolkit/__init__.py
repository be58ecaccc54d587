"""The porting toolkit, for any pair of models: it knows no tutorial.

``engine`` (the lockstep engine: two sides, the same batches, every tensor compared),
``check`` (``compare.check``: a user's port against its torch model), ``traps`` (the known
porting traps and how a divergence is matched to one), ``spec`` (``twinnets check SPEC.py``).
"""
