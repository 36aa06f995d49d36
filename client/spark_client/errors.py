"""Errors of the client; each failure kind has its own exit code (the command line's `main` returns it)."""

from __future__ import annotations


class SparkError(Exception):
    exit_code = 1  # anything unexpected

    def __init__(self, message: str, status: int | None = None, code: str | None = None, job: dict | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.job = message, status, code, job


class AuthError(SparkError):
    exit_code = 3  # missing or wrong token


class Refused(SparkError):
    exit_code = 4  # the server refused the input or the options (413, 415, 422, ...)


class Unavailable(SparkError):
    exit_code = 5  # queue full, not ready, or unreachable, after every retry


class JobFailed(SparkError):
    exit_code = 6


class JobCanceled(SparkError):
    exit_code = 7


class NotFound(SparkError):
    exit_code = 8  # no such job (or it expired), or its results are gone


class DownloadError(SparkError):
    exit_code = 9  # the file did not arrive whole after every retry


class InputMissing(SparkError):
    exit_code = 10  # a local input that does not exist or cannot be read, or a folder with no media in it
