"""Which network sockets a process holds, from /proc (Linux): its socket fds matched against the kernel's
tcp/udp/raw tables of its network namespace. Unix-domain sockets and pipes are not network ports."""

from __future__ import annotations

import os
from pathlib import Path

_TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "udplite", "udplite6")


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:     # closed meanwhile
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def network_sockets(pid: int) -> list[str]:
    """One line per inet socket of `pid` (table, local address, remote address, state); empty: no port."""
    mine = socket_inodes(pid)
    found = []
    for table in _TABLES:
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in mine:
                found.append(f"{table} {fields[1]} -> {fields[2]} state {fields[3]}")
    return found
