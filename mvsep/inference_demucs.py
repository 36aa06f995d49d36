"""Command line of the engine, with the original MVSEP-MDX23 flags and one flag per registered option.

    python mvsep/inference_demucs.py --input_audio song.mp3 episode.mp4 --output_folder out/ [--only_vocals]
    spark-separate ...   (the same, installed as a console script)

Writes <name>_vocals, <name>_instrum and, unless --only_vocals, <name>_bass, _drums, _other, _instrum2; with
--recipe R, every stem of R. Recipe plug-ins: SPARK_RECIPES=module,module (docs/recipes.md).
Exit status: 0 done, 1 a bad input or option, 2 model pack problem, 3 out of memory, 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mvsep.errors import (InputError, ModelPackError, MvsepError,  # noqa: E402
                          OptionError, OutOfMemoryError)

ORIGINAL_SUFFIXES = {"instrumental": "instrum", "instrumental2": "instrum2"}


TYPES = {"int": int, "float": float}


def build_parser() -> argparse.ArgumentParser:
    """The original program's flags, then one flag per option of the recipe registry (`mvsep.recipes`): the
    engine-wide options and every recipe's, named as the `Options` attributes, defaults from the registry."""
    from mvsep import recipes
    p = argparse.ArgumentParser(description="Separate media into stems with a registered recipe (default: the "
                                            "MVSEP-MDX23 ensemble: vocals/instrumental, and drums, bass, other).")
    p.add_argument("--input_audio", "-i", nargs="+", required=True, help="input media files (audio or video)")
    p.add_argument("--output_folder", "-r", required=True, help="folder for the stems")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present (slow)")
    p.add_argument("--large_gpu", action="store_true", help="keep every model resident on the device")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device for torch and ONNX Runtime")
    p.add_argument("--model_dir", default=None,
                   help="model pack dir (default: $SPARK_MODELS_DIR, /models-cache, mvsep/models, demo pack)")
    p.add_argument("--recipe", default="mdx23", choices=recipes.names(), help="; ".join(
        f"{r.name}: {', '.join(r.stem_names)}" for r in recipes.all_recipes()))
    readers = {}
    for r in recipes.all_recipes():
        for o in r.options:
            readers.setdefault(o.key, []).append(r.name)
    for key, o in recipes.option_table().items():
        where = f"{'/'.join(readers[key])}: " if key in readers else ""
        text = f"{where}{o.help} (default: {o.default})"
        flags = (f"--{key}", *o.flags)
        if o.type == "bool":
            p.add_argument(*flags, dest=key, action="store_true", default=None, help=where + o.help)
        elif o.type == "choice":
            p.add_argument(*flags, dest=key, default=None, choices=[str(c) for c in o.choices], help=text)
        else:
            p.add_argument(*flags, dest=key, type=TYPES[o.type], default=None, help=text)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    from mvsep import recipes
    recipes.load_plugins(recipes.plugin_modules(os.environ.get("SPARK_RECIPES")))
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sep = None
    try:
        from tqdm import tqdm

        from mvsep import Separator, translate
        fields = {key: getattr(args, key) for key in recipes.option_table()}
        opts, _ = translate({"recipe": args.recipe, **fields}, strict=False, default_stems=False)
        from mvsep.pack import settings_from_env
        env = settings_from_env()
        sep = Separator(args.model_dir or env["models_dir"], "cpu" if args.cpu else "auto", args.gpu_id,
                        args.large_gpu, allow_demo=env["allow_demo"])
        opts = sep.check_options(opts)
        if sep.pack.kind == "demo":
            print(f"NOTE: using the DEMO model pack ({sep.pack.dir}): demo quality only", file=sys.stderr)
        for path in args.input_audio:
            with tqdm(total=1.0, desc=Path(path).name, unit="job", disable=None,
                      bar_format="{desc}: {percentage:3.0f}% |{bar}| {elapsed}<{remaining} {postfix}") as bar:
                def progress(fraction, stage, bar=bar):
                    bar.n = fraction
                    bar.set_postfix_str(stage, refresh=False)
                    bar.refresh()
                res = sep.separate_file(path, args.output_folder, opts, progress=progress,
                                        suffixes=ORIGINAL_SUFFIXES)
            for stem, out in res.stems.items():
                print(f"{stem}: {out}")
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (InputError, OptionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModelPackError as exc:
        where = f" (model dir {sep.pack.dir})" if sep else ""
        print(f"error: {exc}{where}", file=sys.stderr)
        return 2
    except OutOfMemoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except MvsepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as exc:  # e.g. --gpu_id without a GPU: one line, no traceback
        if os.environ.get("MVSEP_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
