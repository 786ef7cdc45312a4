"""The gzip inflater .spz decoding uses: Intel ISA-L's (`isal`, bundled in the extension as a wheel per
platform and Python) where it is installed, else the standard library's zlib, which gives the same bytes.

Inflate is the one step of an .spz import that cannot be split across cores (a gzip stream is one sequential
deflate stream), and zlib inflates at about 240 MB/s of output on the 2-core CI machine: 0.27 s of a 1M-Gaussian
SH-3 file, more than a whole 1M-Gaussian .ply import (0.24 s). ISA-L inflates the same stream in 0.12 s. Without
it (a platform it has no wheel for, e.g. Windows on ARM) .spz opens the same, only slower.
"""

from __future__ import annotations

import zlib as _zlib
from types import ModuleType

try:
    from isal import isal_zlib as _isal_zlib
except ImportError:   # not bundled for this platform / Python: the standard library's inflater
    _isal_zlib = None

_BACKENDS: dict[str, ModuleType] = {"zlib": _zlib, **({"isal": _isal_zlib} if _isal_zlib is not None else {})}
BACKEND = "isal" if _isal_zlib is not None else "zlib"


def available() -> tuple[str, ...]:
    """The inflaters this Python can use, the default first."""
    return (BACKEND,) + tuple(name for name in _BACKENDS if name != BACKEND)


def gzip_decompressobj(backend: str | None = None):
    """A streaming gzip decompressor (zlib's `decompressobj(wbits=31)` interface: decompress, flush, eof)."""
    return _BACKENDS[backend or BACKEND].decompressobj(wbits=31)


def errors(backend: str | None = None) -> tuple[type[BaseException], ...]:
    """What that decompressor raises on a damaged stream."""
    return (_BACKENDS[backend or BACKEND].error, EOFError)
