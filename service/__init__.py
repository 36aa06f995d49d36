"""Spark Dubbing separation service: FastAPI app over the `mvsep` engine."""

__version__ = "1.0.0"
