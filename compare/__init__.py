"""Train the twin implementations on the same data and prove, in numbers, that they agree.

``compare.check(torch_model, flax_model, ...)`` does for a user's own port what ``parity``
does for the tutorials (``compare.toolkit``); ``compare.optim.to_optax`` and
``compare.port.torch_to_nnx`` / ``nnx_to_torch`` are its parts. Importing ``compare`` loads
neither torch nor JAX: each is imported where it is used.
"""


class CompareError(Exception):
    """Bad input or a failed run: the message is one line meant for the user."""


def check(
    torch_model,
    flax_model,
    *,
    batches,
    torch_loss,
    flax_loss,
    torch_optimizer,
    optax_tx=None,
    steps=None,
    dtype="float64",
    to_flax=None,
    tolerance=None,
    **options,
):
    """Check ``flax_model`` (Flax NNX) against ``torch_model`` in float64 lockstep and return
    a report (``compare.toolkit.Report``; ``to_json()`` has ``parity --json``'s fields plus
    ``forward_rel_diff``, ``grad_rel_diff`` and ``first_divergence``). ``options``:
    ``scheduler``, ``torch_step`` / ``flax_step``, ``dropout``, ``seed``, ``progress``; see
    ``compare.toolkit.check`` for every argument."""
    from compare.toolkit import check as run_check

    return run_check(
        torch_model,
        flax_model,
        batches=batches,
        torch_loss=torch_loss,
        flax_loss=flax_loss,
        torch_optimizer=torch_optimizer,
        optax_tx=optax_tx,
        steps=steps,
        dtype=dtype,
        to_flax=to_flax,
        tolerance=tolerance,
        **options,
    )
