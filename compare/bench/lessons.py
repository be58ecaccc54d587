"""The ``lesson`` variant: each lesson's own input pipeline and loop, as written."""

import dataclasses
import gzip
import itertools
from pathlib import Path

import numpy as np

from compare.bench.timing import loss_value


@dataclasses.dataclass(frozen=True)
class Lesson:
    kind: str  # "mnist": torchvision MNIST + transforms; "tensors": TensorDataset; "loop"
    mean: float = 0.0
    std: float = 1.0
    flatten: bool = False  # the lesson's loop flattens each batch before the model
    num_workers: int = 0


LESSONS = {
    # Liu Er, lectures 9-11: ToTensor(), Normalize((0.1307,), (0.3081,)), DataLoader(shuffle, 64)
    "mnist": Lesson("mnist", mean=0.1307, std=0.3081),
    # Wu Maogui ch. 3: Normalize([0.5], [0.5]); the loop does img.view(img.size(0), -1)
    "mnist-half": Lesson("mnist", mean=0.5, std=0.5, flatten=True),
    # Morvan Zhou 306_optimizer.py: DataLoader(TensorDataset(x, y), BATCH_SIZE, shuffle, workers=2)
    "noisy-parabola": Lesson("tensors", num_workers=2),
    # Morvan Zhou 402_RNN_classifier.py: ToTensor() only, b_x.view(-1, 28, 28) inside the model
    "mnist-unit-2k": Lesson("mnist"),
    # Wu Maogui ch. 8: the VAE's ToTensor() pixels, the GANs' Normalize([0.5], [0.5]), flattened
    # by the loop (DCGAN keeps the images)
    "mnist-pixels": Lesson("mnist", flatten=True),
    "mnist-half-train": Lesson("mnist", mean=0.5, std=0.5, flatten=True),
    "mnist-half-train-2d": Lesson("mnist", mean=0.5, std=0.5),
}


def lesson_for(task, hp):
    """The lesson's input pipeline; full-batch lessons loop over tensors built once on the CPU."""
    if task.dataset in LESSONS:
        return LESSONS[task.dataset]
    return Lesson("loop") if hp.batch_size is None else Lesson("tensors")


def lesson_block(twins, adapter, fresh, device, steps, opts, tmp):
    """The lesson's own loop: its loader, ``.to(device)`` per batch, the loss read back."""
    import torch

    task, hp, module = twins.task, twins.hp, twins.torch_module
    lesson = lesson_for(task, hp)
    model, optimizer = fresh()
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[twins.dtype]
    if lesson.kind == "loop":  # lessons A-C: tensors built once, on the CPU, no device code
        model, optimizer = model.cpu(), module.new_optimizer(model.cpu(), hp)
        x, y = twins.torch_arrays["x"], twins.torch_arrays["y"]

        def block():
            loss = None
            for _ in range(steps):
                loss = adapter.lesson_step(module, model, optimizer, x, y)
            return loss_value(loss)

        return block
    if lesson.kind == "mnist":
        dataset = lesson_mnist(tmp, lesson)
    else:
        from torch.utils.data import TensorDataset

        dataset = TensorDataset(twins.torch_arrays["x"], twins.torch_arrays["y"])
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=hp.batch_size,
        shuffle=True,
        num_workers=lesson.num_workers,
        generator=torch.Generator().manual_seed(opts["seed"]),
    )

    def block():
        running_loss = 0.0
        # the block's full batches, epoch after epoch when the block is longer than one
        epochs = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
        for inputs, target in itertools.islice(epochs, steps):
            # features in the run's dtype; word indices stay integers
            dtype = torch_dtype if inputs.is_floating_point() else inputs.dtype
            inputs, target = inputs.to(device, dtype), target.to(device)
            if lesson.flatten:
                inputs = inputs.view(inputs.size(0), -1)
            loss = adapter.lesson_step(module, model, optimizer, inputs, target)
            running_loss += float(np.mean(loss.tolist()))  # the lesson's loss.item()
        return running_loss / steps

    return block


def lesson_mnist(root, lesson):
    """torchvision's ``datasets.MNIST`` over the shipped files, unpacked where it looks for
    them (``root/MNIST/raw``, under the full set's names), with the lesson's transforms."""
    from torchvision import datasets, transforms

    from compare.tutorials import data

    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for key, name in data.MNIST_FILES.items():
        target = raw / name
        if not target.exists():
            target.write_bytes(
                gzip.decompress((data.SHIPPED_MNIST / data.SHIPPED_FILES[key]).read_bytes())
            )
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((lesson.mean,), (lesson.std,))]
    )
    return datasets.MNIST(root=str(root), train=True, download=False, transform=transform)
