"""What the command line knows of the server's recipes (GET /recipes): help text, and checks made before an
upload starts (recipe, stems, size), so a choice the server would refuse never costs an upload."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputMissing, Refused

MEDIA = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wma", ".aif", ".aiff", ".mp4", ".mkv",
         ".mov", ".avi", ".webm", ".mka", ".ts", ".mxf"}
# Shown when the server cannot be asked (help without a reachable server); `spark recipes` shows the server's own.
BUILT_IN = "mdx23: vocals, instrumental, drums, bass, other\ncinematic: dialog, music, effects, background, background2"


def describe(cat: dict) -> str:
    """Each recipe with its stems (unavailable ones marked with the reason) and its own options."""
    lines = []
    for r in cat["recipes"]:
        state = "" if r.get("available", True) else "  [not in this server's pack]"
        lines.append(f"{r['name']}: {r.get('summary', '')}{state}")
        for s in r["stems"]:
            mark = "" if s.get("available", True) else f"  (unavailable: {s.get('reason')})"
            default = " *" if s["name"] in r.get("default_stems", []) else ""
            lines.append(f"  {s['name']}{default}{mark}")
        for o in r.get("options", []):
            lines.append(f"  option {o['name']}={o.get('default')}: {o.get('help', '')}")
    lines.append("(* = default stems; set an option with --set NAME=VALUE, or its own flag where it has one)")
    opts = cat.get("options", [])
    if opts:
        lines.append("for every recipe: " + ", ".join(
            f"--{o['name'].replace('_', '-')}" + (f" {{{','.join(map(str, o['choices']))}}}" if o.get("choices")
                                                  else "") for o in opts))
    lim = cat.get("limits") or {}
    if lim:
        lines.append(f"limits: {lim.get('max_upload_bytes', 0) / 2**20:.0f} MB and "
                     f"{lim.get('max_duration_s', 0) / 60:.0f} min per input")
    return "\n".join(lines)


def stems_help(cat: dict | None) -> str:
    if not cat:
        return "recipes and their stems (this server's own: `spark recipes`):\n" + BUILT_IN
    return "recipes and their stems on this server:\n" + "\n".join(
        f"{r['name']}: " + ", ".join(s["name"] for s in r["stems"] if s.get("available", True))
        for r in cat["recipes"] if r.get("available", True))


def expand(inputs: list[str]) -> list[str]:
    """Files, folders (their media files, recursively) and URLs; every local input checked before any upload."""
    out = []
    for item in inputs:
        if item.startswith(("http://", "https://")):
            out.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA)
            if not found:
                raise InputMissing(f"{item}: no media files in this folder (looked for "
                                   f"{', '.join(sorted(MEDIA))})")
            out += found
        elif not p.exists():
            raise InputMissing(f"{item}: no such file or folder")
        elif not p.is_file() or not os.access(p, os.R_OK):
            why = "not a regular file" if not p.is_file() else "permission denied"
            raise InputMissing(f"{item}: cannot read it ({why})")
        else:
            try:
                with open(p, "rb") as f:
                    f.read(1)
            except OSError as e:
                raise InputMissing(f"{item}: cannot read it ({e.strerror or e})") from None
            out.append(item)
    return out


def check(cat: dict | None, options: dict, sources: list[str]) -> None:
    """Refused (exit 4) for a recipe, stem or size this server would refuse; nothing when it cannot tell."""
    if not cat:
        return
    recipes = {r["name"]: r for r in cat["recipes"]}
    name = options.get("recipe") or cat.get("default_recipe") or next(
        (r["name"] for r in cat["recipes"] if r.get("available", True)), None)
    recipe = recipes.get(name)
    if recipe is None:
        raise Refused(f"recipe {name}: this server offers {', '.join(recipes)}")
    if not recipe.get("available", True):
        raise Refused(f"recipe {name}: not in this server's model pack (it lacks {', '.join(recipe['missing'])})")
    known = {o["name"] for o in recipe.get("options", []) + cat.get("options", [])}
    unknown = [k for k in options.get("extra", {}) if k not in known]
    if unknown:
        raise Refused(f"--set {', '.join(unknown)}: not an option of recipe {name} "
                      f"(it takes {', '.join(sorted(known))})")
    stems = {s["name"]: s for s in recipe["stems"]}
    asked = [s.strip().lower() for s in (options.get("stems") or "").split(",") if s.strip()]
    if asked != ["all"]:
        unknown = [s for s in asked if s not in stems]
        if unknown:
            raise Refused(f"stems: {', '.join(unknown)} not made by recipe {name} (it makes {', '.join(stems)})")
        for s in asked:
            if not stems[s].get("available", True):
                raise Refused(f"stem {s}: {stems[s].get('reason') or 'not available on this server'}")
    cap = (cat.get("limits") or {}).get("max_upload_bytes")
    for src in sources:
        if cap and not src.startswith(("http://", "https://")) and Path(src).stat().st_size > cap:
            raise Refused(f"{src}: {Path(src).stat().st_size / 2**20:.1f} MB; this server takes files up to "
                          f"{cap / 2**20:.0f} MB")
