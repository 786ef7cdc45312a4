"""Peak memory of importing a 6M-Gaussian SH-3 .ply (about 1.5 GB) through the add-on, in a fresh process: the
peak RSS increase of the import (import_speed.py's child mode) against the file size. Target: below 2x.

The file is written in chunks to a temporary folder (so the writer never holds it whole) and deleted afterwards.
Run: .venv/bin/python benchmarks/import_memory_6m.py [--count 6000000] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 500_000


def write_large_ply(path: Path, count: int, sh_degree: int = 3) -> Path:
    """A valid 3DGS .ply of `count` random Gaussians, written chunk by chunk (one header, then the rows)."""
    from engine.ply import gaussians_to_structured, write_ply
    from engine.synthetic_scene import make_random_gaussians

    write_ply(path, gaussians_to_structured(make_random_gaussians(1, sh_degree=sh_degree, seed=0)))
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].replace(b"element vertex 1\n", f"element vertex {count}\n".encode())
    with open(path, "wb") as f:
        f.write(header)
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            rows = gaussians_to_structured(make_random_gaussians(n, sh_degree=sh_degree, seed=start))
            f.write(rows.astype(rows.dtype.newbyteorder("<")).tobytes())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the file")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ag_mem6m_", dir=args.dir))
    path = folder / f"gaussians_{args.count}_sh3.ply"
    try:
        start = time.perf_counter()
        write_large_ply(path, args.count)
        size = path.stat().st_size
        print(f"file: {args.count:,} Gaussians, SH degree 3, {size / 1e9:.2f} GB "
              f"(written in {time.perf_counter() - start:.0f} s)", flush=True)
        start = time.perf_counter()
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "import_speed.py"), "--memory-child",
                              str(path)], check=True, capture_output=True, text=True).stdout.split()
        peak, imported = int(out[-2]), int(out[-1])
        assert imported == args.count, (imported, args.count)
        print(f"import (fresh process, display evaluated): {time.perf_counter() - start:.1f} s including start-up")
        print(f"peak_memory_delta_GB: {peak / 1e9:.2f}")
        print(f"peak_memory_over_file_size: {peak / size:.2f} (target < 2)")
        return 0 if peak < 2 * size else 1
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            folder.rmdir()


if __name__ == "__main__":
    sys.exit(main())
