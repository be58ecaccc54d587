"""Machinery the PyTorch tutorials share: checkpoints in either of torch's file formats."""

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(model, path):
    """``torch.save(model.state_dict())`` for ``.pt``/``.pth``, safetensors for ``.safetensors``."""
    state_dict = model.state_dict()
    if Path(path).suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save(state_dict, path)


def load_checkpoint(model, path):
    """Load a state dict saved by ``save_checkpoint`` (or by the lesson's own code), strictly."""
    if Path(path).suffix == ".safetensors":
        state_dict = load_file(str(path))
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
