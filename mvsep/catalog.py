"""The engine's catalogue (what it can do, as plain JSON-ready data) and the one translator from a request's
fields to `Options`. Every front end reads these: the HTTP service (`GET /recipes`, validation), the RunPod
worker, the CLI's flags and help, the disk estimate. The JSON shape is the contract in docs/recipes.md.
"""
from __future__ import annotations

from typing import Mapping

from . import recipes
from .errors import OptionError
from .options import Options
from .recipes import DEFAULT_RECIPE


def catalogue(pack=None, limits: dict | None = None, unavailable: str | None = None) -> dict:
    """Recipes (stems, default stems, options), the engine-wide options and `limits`.

    `pack` (a ModelPack: `.file(name)`, `.kind`) fills in what it can run: a stem or recipe whose files it
    lacks is `available: false` with the reason / missing files. `unavailable`: the reason every recipe is
    unavailable (the pack is loading or broken). With neither, everything is listed as available."""
    out = []
    for r in recipes.all_recipes():
        opts = Options(recipe=r.name)
        missing = _lacking(pack, r.files(opts, r.default_stems))
        stems = []
        for s in r.stems:
            lack = _lacking(pack, r.files(opts, (r.residuals.get(s.name, s.name),) + (s.name,)))
            reason = unavailable or (f"the installed pack lacks {', '.join(lack)}" if lack else None)
            stems.append({"name": s.name, "summary": s.summary, "available": reason is None, "reason": reason})
        out.append({"name": r.name, "summary": r.summary, "stems": stems, "default_stems": list(r.default_stems),
                    "all_stems": [s.name for s in r.stems if s.in_all], "residuals": dict(r.residuals),
                    "options": [o.as_dict() for o in r.options if o.api],
                    "available": not missing and unavailable is None, "missing": missing})
    return {"recipes": out, "default_recipe": DEFAULT_RECIPE,
            "options": [o.as_dict() for o in recipes.ENGINE_OPTIONS], "limits": dict(limits or {})}


def _lacking(pack, names) -> list[str]:
    if pack is None:
        return []
    return [f for f in dict.fromkeys(names) if pack.file(f) is None]


def request_fields() -> dict[str, recipes.Option]:
    """Every option a request may carry, by its request field name (engine-wide first, then each recipe's)."""
    return {o.name: o for o in recipes.option_table().values() if o.api}


def translate(params: Mapping, *, strict: bool = True, default_stems: bool = True
              ) -> tuple[Options, list[str] | None]:
    """A request's fields (HTTP form/JSON, RunPod input, CLI flags; `None` values are absent) -> validated
    `Options` and the stems to write. Field names are the catalogue's (`format`, `stems`, `recipe`, ...); the
    `Options` attribute names are accepted too. `stems`: a comma list, a list, or "all"; absent: the recipe's
    default stems (`default_stems=False`: None, i.e. every stem the options make, as the CLI does).
    `strict`: out-of-range numbers are refused (HTTP) rather than clamped (the original CLI's overlaps).
    Raises OptionError(field, message)."""
    if strict and "stems" in params and params["stems"] is None:
        parse_stems(recipes.get(DEFAULT_RECIPE), None)   # an explicit null is not "the default stems"
    params = {k: v for k, v in params.items() if v is not None}
    recipe = recipes.get(str(params.pop("recipe", DEFAULT_RECIPE)).strip().lower())
    stems = parse_stems(recipe, params.pop("stems")) if "stems" in params else None
    if stems is None and default_stems:
        stems = list(recipe.default_stems)
    table = recipes.option_table()
    fields = {**{o.key: o for o in table.values()}, **request_fields()}
    kwargs = dict(recipe.request_options(stems)) if stems is not None else {}
    for name, value in params.items():
        opt = fields.get(name)
        if opt is None:
            raise OptionError(name, "unknown option")
        if isinstance(value, (list, dict, tuple)):
            raise OptionError(opt.name, f"must be a single {opt.type} value")
        if strict and opt.clamp:
            opt = _unclamped(opt)
        try:
            kwargs[opt.key] = opt.check(value)
        except OptionError as e:
            raise OptionError(opt.name, e.message) from None
    opts = Options(recipe=recipe.name, **kwargs).validate()
    return opts, stems


def _unclamped(opt):
    from dataclasses import replace
    return replace(opt, clamp=False)


def parse_stems(recipe, value) -> list[str]:
    """`stems` of a request for `recipe`: names in the recipe's order, each once; "all": every stem of `all`."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise OptionError("stems", f"expected a comma list of {', '.join(recipe.stem_names)} or 'all'")
    items = [s.strip().lower() for s in value if s.strip()]
    if items == ["all"]:
        return [s.name for s in recipe.stems if s.in_all]
    bad = [s for s in items if s not in recipe.stem_names]
    if bad or not items:
        if not items:
            raise OptionError("stems", f"choose at least one of {', '.join(recipe.stem_names)}")
        raise OptionError("stems", f"{', '.join(bad)} not made by recipe {recipe.name} (it makes "
                                   f"{', '.join(recipe.stem_names)})")
    return sorted(set(items), key=recipe.stem_names.index)


def request_dict(opts: Options, stems) -> dict:
    """The request fields that reproduce `opts` and `stems` (the service stores a job's options so)."""
    recipe = recipes.get(opts.recipe)
    out = {"stems": list(stems), "recipe": opts.recipe}
    for o in list(recipes.ENGINE_OPTIONS) + [o for o in recipe.options if o.api]:
        out[o.name] = getattr(opts, o.key)
    return out
