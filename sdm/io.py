"""Atomic file and directory writes, so that an interrupted command leaves no half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            yield tmp
        except OSError as err:  # name the file as the user will know it, not its temporary twin
            if err.filename and Path(err.filename) == tmp:
                raise OSError(err.errno, err.strerror, str(path)) from None
            raise
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide outputs from other users
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Lay out a matplotlib figure, write it to `path` as a PNG (whole or not at all) and release it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        try:
            yield tmp
        except OSError as err:  # name the file as the user will know it, not its temporary home
            if err.filename and Path(err.filename).is_relative_to(tmp):
                raise OSError(err.errno, err.strerror, str(path / Path(err.filename).relative_to(tmp))) from None
            raise
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
