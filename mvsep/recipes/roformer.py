"""The Mel-Band RoFormer and BS-RoFormer recipes (../shared/docs/roformer-recipes.md) and the vocals ensemble.

`mel-roformer` / `bs-roformer`: one public checkpoint each (the yaml beside it gives the dimensions), the chunked
demix of `roformer/demix.py`; stems vocals and instrumental (= the input minus vocals, made by the engine).
`ensemble`: the weighted mean of the vocals of member recipes (the built-in recipes with a `vocals` stem:
mel-roformer, bs-roformer, mdx23; a member is one whose `weight_<name>` option is above 0; by default the two
RoFormers, equally); the instrumental is derived once, from the mean. Members run one after the other, each
adding its weighted vocals into one signal as its pieces are final.
"""
from __future__ import annotations

from ..errors import NotInPackError, OptionError
from ..roformer import FILES
from ..roformer.demix import RoformerRunner
from .base import Option, Recipe, Stem

# Progress units of one RoFormer chunk (a unit ~ one MDX piece through its model; a full-size RoFormer chunk
# costs several). Only the ETA depends on it.
CHUNK_UNITS = 4.0
VOCALS = (Stem("vocals", "the voice / dialog"),
          Stem("instrumental", "everything but the vocals (the input minus vocals)"))


def runner(ctx) -> RoformerRunner:
    """The Separator's RoFormer runner (device, batch size and OOM back-off shared by its jobs)."""
    return ctx.roformer


class VocalsRecipe(Recipe):
    """What the RoFormers and the ensemble share: stems vocals and instrumental (= the input minus vocals),
    their signals "mix" and "vocals"."""
    stems = VOCALS
    residuals = {"instrumental": "vocals"}
    default_stems = ("vocals", "instrumental")
    rest_stems = ("instrumental",)
    lfe_stems = ()

    def stem_blocks(self, signals, stems, blocks):
        mix, vocals = signals["mix"], signals["vocals"]
        for a, b in blocks:
            v = vocals.read(a, b)
            out = {"vocals": v, "instrumental": mix.read(a, b) - v}
            yield {s: out[s] for s in stems}


class RoformerRecipe(VocalsRecipe):
    kind = "mel"
    options = ()

    def files(self, opts, stems) -> list[str]:
        return list(FILES[self.kind])

    def model(self, ctx):
        ckpt, cfg = (ctx.pack.file(f) for f in FILES[self.kind])
        from ..roformer.loader import load_model
        return ctx.pack.cached(f"roformer:{ckpt.name}",
                               lambda: load_model(ckpt, cfg, self.kind, ctx.pack.torch_device()),
                               ckpt.stat().st_size)

    def warm(self, ctx, opts, stems) -> None:
        self.model(ctx)

    def work_units(self, ctx, length: int, opts, stems) -> float:
        cfg = self.model(ctx).cfg
        return CHUNK_UNITS * RoformerRunner.chunk_count(length, cfg.chunk, cfg.step)

    def work_channels(self, opts, stems) -> int:
        return 4   # the mix, the vocals

    def separate(self, ctx, mix, new_signal, opts, stems, job) -> dict:
        vocals = new_signal(mix.frames, 2, f"vocals-{self.name}")
        self.add_vocals(ctx, mix, vocals, 1.0, opts, job)
        return {"mix": mix, "vocals": vocals}

    def add_vocals(self, ctx, mix, vocals, weight: float, opts, job) -> None:
        """Add `weight` x this recipe's vocals of `mix` into the signal `vocals`."""
        model = self.model(ctx)
        job.start(self.name)
        units = CHUNK_UNITS
        runner(ctx).run(model, mix.read, mix.frames, lambda s, y: vocals.add(s, y.T * weight),
                        step=lambda n: job.step(n * units), half=ctx.half(opts))


class MelRoformer(RoformerRecipe):
    name = "mel-roformer"
    kind = "mel"
    summary = "vocals and instrumental from Kim's Mel-Band RoFormer (one model, state of the art vocals)"


class BsRoformer(RoformerRecipe):
    name = "bs-roformer"
    kind = "bs"
    summary = "vocals and instrumental from viperx's BS-RoFormer 1297 (one model)"


# The ensemble's candidate members (recipes with a `vocals` stem) and their default weights.
MEMBERS = {"mel-roformer": 1.0, "bs-roformer": 1.0, "mdx23": 0.0}


def weight_option(name: str) -> str:
    return "weight_" + name.replace("-", "_")


class Ensemble(VocalsRecipe):
    name = "ensemble"
    summary = "the weighted mean of several recipes' vocals (default: the two RoFormers); instrumental = input - it"
    options = tuple(Option(weight_option(n), "float", w, f"weight of {n}'s vocals in the mean, 0..100 "
                           "(0: not a member)", min=0.0, max=100.0) for n, w in MEMBERS.items())

    def members(self, opts) -> list[tuple[Recipe, float]]:
        """(recipe, weight / total) of every member with a weight above 0."""
        from . import get
        chosen = [(n, float(getattr(opts, weight_option(n)))) for n in MEMBERS]
        chosen = [(n, w) for n, w in chosen if w > 0]
        if not chosen:
            raise OptionError(weight_option(next(iter(MEMBERS))), "the ensemble needs at least one weight above 0")
        total = sum(w for _, w in chosen)
        return [(get(n), w / total) for n, w in chosen]

    def files(self, opts, stems) -> list[str]:
        names: list[str] = []
        for member, _ in self.members(opts):
            names += [f for f in member.files(opts, ("vocals",)) if f not in names]
        return names

    def check(self, pack, opts, stems) -> None:
        for member, _ in self.members(opts):
            lacking = pack.missing(member.files(opts, ("vocals",)))
            if lacking:
                raise NotInPackError(f"the ensemble's member {member.name} is not in the {pack.kind} pack: it "
                                     f"lacks {', '.join(lacking)}; set {weight_option(member.name)}=0", lacking)
            member.check(pack, opts, ("vocals",))

    def warm(self, ctx, opts, stems) -> None:
        for member, _ in self.members(opts):
            member.warm(ctx, opts, ("vocals",))

    def work_units(self, ctx, length: int, opts, stems) -> float:
        return sum(m.work_units(ctx, length, opts, ("vocals",)) for m, _ in self.members(opts))

    def work_channels(self, opts, stems) -> int:
        return 2 + sum(m.work_channels(opts, ("vocals",)) for m, _ in self.members(opts))

    def separate(self, ctx, mix, new_signal, opts, stems, job) -> dict:
        from ..signals import blocks
        vocals = new_signal(mix.frames, 2, "vocals-ensemble")
        for member, weight in self.members(opts):
            if isinstance(member, RoformerRecipe):
                member.add_vocals(ctx, mix, vocals, weight, opts, job)
                continue
            signals = member.separate(ctx, mix, new_signal, opts, ("vocals",), job)
            spans = list(blocks(mix.frames))
            for (a, _), out in zip(spans, member.stem_blocks(signals, ("vocals",), spans)):
                vocals.add(a, out["vocals"] * weight)
        return {"mix": mix, "vocals": vocals}
