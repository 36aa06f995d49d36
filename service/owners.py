"""Which server processes sharing this data dir are alive, so a restart takes a dead process's jobs at once.

Each process holds an exclusive `flock` on `<data>/owners/<random>.lock` (its process id written inside) for
its whole life; the kernel drops the lock when the process dies, kill -9 included. A lock file that can be
locked belongs to a dead process: its leases need not run out (`Store.expire_owner`). A process on another
host sharing the data dir over a network filesystem is judged the same way where that filesystem honours
flock; its leases still end on their own otherwise.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("spark.owners")


class Owners:
    def __init__(self, data_dir: Path, process_id: str):
        self.dir = Path(data_dir) / "owners"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process_id = process_id
        self.path = self.dir / f"{secrets.token_hex(8)}.lock"
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self.fd, process_id.encode())

    def dead(self) -> list[str]:
        """Process ids whose owner lock is free (their process is gone); their lock files are removed."""
        out = []
        for path in self.dir.glob("*.lock"):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue  # removed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # alive
            try:
                owner = os.read(fd, 4096).decode("utf-8", "replace").strip()
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
            if owner:
                out.append(owner)
        return out

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
