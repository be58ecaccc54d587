"""Arrays on their way to a side: floats in the side's dtype, images in the side's layout.

numpy only: the data stays framework-free until it is handed to a side.
"""

import numpy as np


def cast(array, np_dtype):
    """Features in a side's dtype; labels and word indices stay integers."""
    array = np.asarray(array)
    return array.astype(np_dtype) if np.issubdtype(array.dtype, np.floating) else array


def nhwc(images):
    """NCHW (torch's layout) to NHWC (Flax's): done once, where data enters the JAX side."""
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def to_flax_layout(array):
    """An array of a batch in torch's layout as the Flax side takes it: images (4-D) NHWC,
    anything else unchanged."""
    return nhwc(array) if np.ndim(array) == 4 else array
