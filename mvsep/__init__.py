"""MVSEP-MDX23 separation engine: the ensemble of ../shared/docs/mdx23-algorithm.md as a plain library."""
from .errors import (Cancelled, InputError, ModelPackError, MvsepError, NotInPackError, OptionError,
                     OutOfMemoryError, UnsupportedMediaError)

__version__ = "1.1.0"
__all__ = ["Separator", "Options", "SeparationResult", "probe", "AudioInfo", "MvsepError", "InputError",
           "UnsupportedMediaError", "OptionError", "ModelPackError", "NotInPackError", "Cancelled",
           "OutOfMemoryError", "__version__"]


def __getattr__(name):  # torch and the models load only when the engine is used
    if name == "Options":
        from .options import Options
        return Options
    if name in ("Separator", "SeparationResult"):
        from . import engine
        return getattr(engine, name)
    if name in ("catalogue", "translate"):
        from . import catalog
        return getattr(catalog, name)
    if name in ("probe", "AudioInfo"):
        from . import audio
        return getattr(audio, name)
    raise AttributeError(name)
