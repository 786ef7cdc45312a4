"""Files other processes may read while we write them (the on-disk cache, model downloads): written under a
name unique to this writer beside the target, then moved into place with one os.replace. Readers see the old
file or the new one, never a part; two writers of the same target never share a temporary file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def partial_path(target: str | os.PathLike) -> Path:
    """A new, empty file beside `target` for this writer alone, ending like `target` (np.savez keeps it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_write(target: str | os.PathLike) -> Iterator[Path]:
    """Write to the yielded path; on success it replaces `target` at once, on an exception it is removed."""
    partial = partial_path(target)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
