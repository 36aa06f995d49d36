"""Client of the Spark Dubbing separation service (library and the `spark` command)."""

from .api import Client
from .errors import (AuthError, DownloadError, InputMissing, JobCanceled, JobFailed, NotFound, Refused, SparkError,
                     Unavailable)

__version__ = "0.1.0"
__all__ = ["Client", "SparkError", "AuthError", "Refused", "Unavailable", "JobFailed", "JobCanceled", "NotFound",
           "DownloadError", "InputMissing"]
