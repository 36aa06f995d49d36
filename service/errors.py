"""The one error type routes raise; its message is always safe to show a caller."""

from __future__ import annotations

import errno
import sqlite3


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def body(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


def disk_full(e: BaseException) -> bool:
    """An OSError ENOSPC/EDQUOT, or SQLite's "database or disk is full"."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, sqlite3.OperationalError):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e)
    return False


def insufficient_storage(what: str) -> ApiError:
    return ApiError(507, "insufficient_storage", f"the server's disk is full ({what}); retry later",
                    headers={"Retry-After": "60"})
