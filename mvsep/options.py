"""`Options`: the frozen settings of one separation. Its attributes and defaults come from the recipe registry's
option table (`recipes.ENGINE_OPTIONS` and each recipe's `options`), written once there.

    Options(only_vocals=True)
    Options(recipe="cinematic", high_quality=True, output_format="flac")
"""
from __future__ import annotations

from . import recipes


class Options:
    __slots__ = ("_values",)

    def __init__(self, recipe: str = "mdx23", **values):
        table = recipes.option_table()
        for key in values:
            if key not in table:
                raise TypeError(f"Options() got an unexpected keyword argument {key!r}")
        data = {key: opt.default for key, opt in table.items()}
        data.update(values)
        data["recipe"] = recipe
        object.__setattr__(self, "_values", data)

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            opt = recipes.option_table().get(name)   # an option registered after this object was made
            if opt is None:
                raise AttributeError(name) from None
            return opt.default

    def __setattr__(self, name, value):
        raise AttributeError("Options is frozen: use opts.replace(...)")

    def __eq__(self, other):
        return isinstance(other, Options) and self._values == other._values

    def __hash__(self):
        return hash(tuple(sorted((k, str(v)) for k, v in self._values.items())))

    def __repr__(self):
        return "Options(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def __reduce__(self):   # copy and pickle through the constructor (the object is frozen)
        return _rebuild, (dict(self._values),)

    def as_dict(self) -> dict:
        return dict(self._values)

    def replace(self, **values) -> "Options":
        data = {**self._values, **values}
        return Options(**data)

    def validate(self) -> "Options":
        """A checked copy: every value in its type and range (overlaps clamped to [0, 0.99] as the original
        did), the recipe registered; raises OptionError(field, msg)."""
        recipes.get(self.recipe)
        checked = {key: opt.check(self._values.get(key, opt.default))
                   for key, opt in recipes.option_table().items()}
        return Options(recipe=self.recipe, **checked)

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems a run writes when the caller names none."""
        return recipes.get(self.recipe).stems_for(self)


def _rebuild(values: dict) -> Options:
    return Options(**values)
