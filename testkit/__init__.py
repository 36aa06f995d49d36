"""Test support that tests, `bench/` and `scripts/` share (not part of the engine's or the service's runtime):
`toypack` small model packs in the real formats (and a fault-injecting model), `reference` the plain whole-file
reference implementation of the spec, `service` a real server on 127.0.0.1 for tests and benchmarks,
`demo_clips` the demo pack's held-out clips."""

import importlib.util
import sys
from pathlib import Path


def load_module(path, name: str | None = None):
    """Import a script that is not in a package (scripts/wheel_target.py, deploy/runpod/handler.py) by its path,
    under `name` (default: its file stem), without touching sys.path."""
    path = Path(path)
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module
