"""GET /recipes: what this server can run, in the catalogue shape (/work/notes/catalogue.md), built from today's
constants and the installed pack. A stand-in until the recipe registry (issue 20) exports the catalogue itself."""

from __future__ import annotations

from fastapi import APIRouter

from ..context import Svc
from ..schemas import CINEMATIC_STEMS, STEMS

router = APIRouter(tags=["service"])

STEM_HELP = {"vocals": "the voice / dialog", "instrumental": "everything but the vocals",
             "drums": "drums", "bass": "bass", "other": "the rest of the instrumental (4-stem split)",
             "dialog": "speech", "music": "the score and songs", "effects": "sound effects and ambience",
             "background": "everything but the dialog (music + effects + what neither holds)",
             "background2": "music + effects"}
FOUR = ("drums", "bass", "other")


def _opt(name, type_, default, help_, choices=None, lo=None, hi=None) -> dict:
    return {"name": name, "type": type_, "default": default, "min": lo, "max": hi, "choices": choices, "help": help_}


ENGINE_OPTIONS = [
    _opt("format", "choice", "wav", "wav is float32; wav16/wav24 integer WAV; flac; mp3",
         ["wav", "wav16", "wav24", "flac", "mp3"]),
    _opt("sample_rate", "choice", "native", "native keeps the input's rate", ["native", 44100]),
    _opt("mono", "bool", False, "one channel stems"),
    _opt("precision", "choice", "fp32", "fp16: CUDA only, faster, not exact", ["fp32", "fp16"]),
    _opt("layout", "choice", "keep", "surround inputs only: keep every channel pair, the centre only, or a "
         "stereo downmix", ["keep", "center", "stereo"]),
]
MDX23_OPTIONS = [
    _opt("overlap_large", "float", 0.6, "overlap of the demucs/MDX windows", lo=0.0, hi=0.99),
    _opt("overlap_small", "float", 0.5, "overlap of the small windows", lo=0.0, hi=0.99),
    _opt("shifts", "int", 1, "random shifts averaged by demucs", lo=0, hi=10),
    _opt("use_kim_model_1", "bool", False, "Kim_Vocal_1 instead of Kim_Vocal_2"),
    _opt("single_onnx", "bool", False, "one MDX model only (faster)"),
]
CINEMATIC_OPTIONS = [_opt("high_quality", "bool", False, "mean of three checkpoints (3x time)"),
                     _opt("shifts", "int", 1, "random shifts averaged by demucs", lo=0, hi=10)]


def catalogue(runner, cfg) -> dict:
    sep = runner._seps[0] if runner._seps else None  # noqa: SLF001 (read only; gone with the registry)

    def lacks(**kw) -> list[str]:
        if sep is None:
            return []
        from mvsep import Options
        return list(sep.missing(Options(**kw)))

    def stem(name: str, missing: list[str]) -> dict:
        files = ", ".join(missing[:2]) + (f" and {len(missing) - 2} more" if len(missing) > 2 else "")
        reason = f"the installed pack lacks {files}" if missing else None
        return {"name": name, "summary": STEM_HELP[name], "available": not missing, "reason": reason}

    base, four = lacks(recipe="mdx23", only_vocals=True), lacks(recipe="mdx23", only_vocals=False)
    four_only = [f for f in four if f not in base]
    mdx_stems = [stem(s, base + (four_only if s in FOUR else [])) for s in STEMS]
    cin = lacks(recipe="cinematic")
    recipes = [
        {"name": "mdx23", "summary": "MDX23 ensemble: vocals and instrumental, optionally drums, bass, other",
         "stems": mdx_stems, "default_stems": ["vocals", "instrumental"], "options": MDX23_OPTIONS,
         "available": not base, "missing": base},
        {"name": "cinematic", "summary": "film and TV: dialog, music, effects (for dubbing)",
         "stems": [stem(s, cin) for s in CINEMATIC_STEMS], "default_stems": list(CINEMATIC_STEMS),
         "options": CINEMATIC_OPTIONS, "available": not cin, "missing": cin},
    ]
    hq = lacks(recipe="cinematic", high_quality=True)
    if hq and not cin:  # the option exists, but this pack cannot honour it
        recipes[1]["options"] = [dict(CINEMATIC_OPTIONS[0], help=CINEMATIC_OPTIONS[0]["help"] +
                                      f"; not in this pack (lacks {', '.join(hq)})"), CINEMATIC_OPTIONS[1]]
    return {"recipes": recipes, "options": ENGINE_OPTIONS,
            "limits": {"max_upload_bytes": cfg.max_upload_bytes, "max_duration_s": cfg.max_duration_s}}


@router.get("/recipes", summary="The recipe catalogue: recipes, their stems (with what the pack can make), "
                                "options and limits")
def recipes(svc: Svc) -> dict:
    return catalogue(svc.runner, svc.cfg)
