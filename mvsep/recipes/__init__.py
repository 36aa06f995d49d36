"""The recipe registry: every recipe the engine can run, the engine-wide options, and plug-ins.

Built in: `mdx23` (the MVSEP-MDX23 ensemble) and `cinematic` (MVSEP-CDX23). More come from outside the package:
an installed distribution's `spark.recipes` entry points (loaded on first use), or modules named by
`SPARK_RECIPES=module,module` (parsed by `plugin_modules`, loaded by `load_plugins`). A plug-in module calls
`register(MyRecipe())` when imported, or its entry point names a Recipe subclass or instance.
"""
from __future__ import annotations

import importlib
import logging
import threading

from ..audio import MODEL_RATE, OUTPUT_FORMATS
from ..errors import OptionError
from .base import Option, Recipe, Stem

__all__ = ["Option", "Recipe", "Stem", "ENGINE_OPTIONS", "register", "get", "names", "all_recipes",
           "option_table", "plugin_modules", "load_plugins", "ENTRY_POINT_GROUP"]

log = logging.getLogger("mvsep.recipes")
ENTRY_POINT_GROUP = "spark.recipes"

# Options every recipe honours (the engine applies them): names are the request fields.
ENGINE_OPTIONS: tuple[Option, ...] = (
    Option("format", "choice", "wav", "wav is 32-bit float; wav16/wav24 PCM; flac 24-bit; mp3 320 kbit/s",
           choices=OUTPUT_FORMATS, attr="output_format"),
    Option("sample_rate", "choice", "native", "stems at the input's rate (native) or at 44.1 kHz",
           choices=("native", MODEL_RATE)),
    Option("mono", "bool", False, "write mono stems"),
    Option("precision", "choice", "fp32", "fp16: faster on a CUDA GPU, not the exact recipe (refused on the CPU)",
           choices=("fp32", "fp16")),
    Option("layout", "choice", "keep", "surround inputs: keep every channel pair, separate the centre only "
           "(center), or downmix (stereo)", choices=("keep", "center", "stereo")),
)

_recipes: dict[str, Recipe] = {}
_lock = threading.RLock()
_entry_points_loaded = False
_table: dict[str, Option] | None = None


def register(recipe: Recipe | type, replace: bool = False) -> Recipe:
    """Add a recipe (an instance or a Recipe subclass). Its option names must agree with the ones already
    registered (one default per name)."""
    if isinstance(recipe, type):
        recipe = recipe()
    if not recipe.name or not recipe.stems:
        raise ValueError(f"{type(recipe).__name__}: a recipe needs a name and stems")
    global _table
    with _lock:
        if recipe.name in _recipes and not replace:
            if type(_recipes[recipe.name]) is type(recipe):
                return _recipes[recipe.name]   # the same plug-in loaded twice
            raise ValueError(f"recipe {recipe.name!r} is registered already")
        _check_options(recipe)
        _recipes[recipe.name] = recipe
        _table = None
    return recipe


def unregister(name: str) -> None:
    global _table
    with _lock:
        _recipes.pop(name, None)
        _table = None


def _check_options(recipe: Recipe) -> None:
    known = {o.key: o for o in ENGINE_OPTIONS}
    for r in _recipes.values():
        if r.name != recipe.name:
            known.update({o.key: o for o in r.options})
    for o in recipe.options:
        if o.key == "recipe" or (o.key in known and known[o.key] != o):
            raise ValueError(f"recipe {recipe.name}: option {o.key} differs from the one already registered")
    bad = [r for r in recipe.residuals.items() if r[0] not in recipe.stem_names or r[1] not in recipe.stem_names]
    if bad or not set(recipe.default_stems) <= set(recipe.stem_names):
        raise ValueError(f"recipe {recipe.name}: residuals and default stems must be among its stems")


def _ensure_loaded() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        from importlib.metadata import entry_points
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if isinstance(obj, Recipe) or (isinstance(obj, type) and issubclass(obj, Recipe)):
                    register(obj)
            except Exception:  # a broken plug-in must not take the engine down
                log.exception("recipe plug-in %s (entry point %s) failed to load", ep.value, ep.name)


def get(name: str) -> Recipe:
    _ensure_loaded()
    try:
        return _recipes[name]
    except (KeyError, TypeError):
        raise OptionError("recipe", f"must be one of {', '.join(names())}") from None


def names() -> list[str]:
    _ensure_loaded()
    return list(_recipes)


def all_recipes() -> list[Recipe]:
    _ensure_loaded()
    return list(_recipes.values())


def option_table() -> dict[str, Option]:
    """Every option by its `Options` attribute: the engine's, then each recipe's (each name once)."""
    global _table
    _ensure_loaded()
    with _lock:
        if _table is None:
            table = {o.key: o for o in ENGINE_OPTIONS}
            for r in _recipes.values():
                for o in r.options:
                    table.setdefault(o.key, o)
            _table = table
        return _table


def plugin_modules(value: str | None) -> tuple[str, ...]:
    """SPARK_RECIPES as given: a comma list of importable module names."""
    mods = tuple(m.strip() for m in (value or "").split(",") if m.strip())
    for m in mods:
        if not all(part.isidentifier() for part in m.split(".")):
            raise ValueError(f"SPARK_RECIPES: {m!r} is not a module name")
    return mods


def load_plugins(modules) -> list[str]:
    """Import plug-in modules (each registers its recipes when imported; a module-level RECIPES list or RECIPE
    is registered too). Returns the recipe names afterwards."""
    for name in modules:
        mod = importlib.import_module(name)
        for obj in list(getattr(mod, "RECIPES", ())) + ([mod.RECIPE] if hasattr(mod, "RECIPE") else []):
            register(obj)
    return names()


def _register_builtins() -> None:
    """Every Recipe subclass defined in a module of this package (a built-in recipe is one module, nothing
    else to edit); the default recipe first, the others by name."""
    import pkgutil
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        found += [obj for obj in vars(mod).values() if isinstance(obj, type) and issubclass(obj, Recipe)
                  and obj.__module__ == mod.__name__ and obj.name]
    for cls in sorted(found, key=lambda c: (c.name != DEFAULT_RECIPE, c.name)):
        register(cls())


DEFAULT_RECIPE = "mdx23"
_register_builtins()
