"""Results written whole or not at all: every output directory is filled through a staging
directory beside it, its main file moved in last."""

import shutil
import tempfile
from pathlib import Path

from compare.errors import CompareError


def check_writable(out_dir):
    """Fail before the work, not after, when the results could not be written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CompareError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir.parent, prefix=".probe-")
        probe.close()
    except OSError as err:
        raise CompareError(f"--out {out_dir}: cannot write there ({err.strerror or err})") from None


def write_whole(out_dir, write, last):
    """``write(staging)`` fills a staging directory beside ``out_dir``; its files then move
    into ``out_dir``, ``last`` (the file that says the results are complete) after the others.
    A failure leaves ``out_dir`` as it was and no staging behind. Returns the paths written."""
    out_dir = Path(out_dir)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as err:
        raise CompareError(f"--out {out_dir}: cannot write there ({err.strerror or err})") from None
    try:
        write(staging)
        out_dir.mkdir(exist_ok=True)
        names = sorted(p.name for p in staging.iterdir() if p.name != last) + [last]
        for name in names:
            shutil.move(staging / name, out_dir / name)
    except OSError as err:
        raise CompareError(f"--out {out_dir}: writing the results failed ({err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [str(out_dir / name) for name in names]


def write_file_whole(path, text):
    """``text`` into ``path`` through a temporary file beside it, renamed over it at the end:
    the file is whole or absent, never half written."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise CompareError(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise CompareError(f"{path.parent}: no such directory")
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False
        ) as tmp:
            tmp.write(text)
        Path(tmp.name).replace(path)
    except OSError as err:
        raise CompareError(f"{path}: cannot write there ({err.strerror or err})") from None
    return str(path)
