"""Errors the engine raises. Callers (CLI, service) map them to exit codes / HTTP statuses."""


class MvsepError(Exception):
    """Base of every error the engine raises on purpose; its message is safe to show a caller."""


class InputError(MvsepError):
    """The input media is unusable: not found, empty, corrupt, not audio, no audio stream (HTTP 422)."""


class UnsupportedMediaError(InputError):
    """The input is a container/codec the decoder does not know at all (HTTP 415)."""


class OptionError(MvsepError):
    """An option is out of range or unknown; `field` names it (HTTP 422)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class ModelPackError(MvsepError):
    """Model files are missing or fail verification; `missing` lists the file names (HTTP 503)."""

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = list(missing or [])


class NotInPackError(ModelPackError):
    """The request needs models this pack does not ship (e.g. 4 stems on the demo pack)."""


class Cancelled(MvsepError):
    """The caller's cancel flag was seen between two windows."""


class OutOfMemoryError(MvsepError):
    """Even the smallest batch/chunk size does not fit in device memory."""


class NumericError(MvsepError):
    """A reduced precision (fp16/bf16) made non-finite samples (NaN/inf): nothing is written."""
