"""Command line of the engine, with the original MVSEP-MDX23 flags.

    python mvsep/inference_demucs.py --input_audio song.mp3 episode.mp4 --output_folder out/ [--only_vocals]

Writes <name>_vocals, <name>_instrum and, unless --only_vocals, <name>_bass, _drums, _other, _instrum2.
Exit status: 0 done, 1 a bad input or option, 2 model pack problem, 3 out of memory, 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the package, not its modules as top-level names
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from mvsep.errors import (InputError, ModelPackError, MvsepError,  # noqa: E402
                          OptionError, OutOfMemoryError)

ORIGINAL_SUFFIXES = {"instrumental": "instrum", "instrumental2": "instrum2"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Separate vocals/dialog and background (and drums, bass, other) "
                                            "with the MVSEP-MDX23 ensemble.")
    p.add_argument("--input_audio", "-i", nargs="+", required=True, help="input media files (audio or video)")
    p.add_argument("--output_folder", "-r", required=True, help="folder for the stems")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present (slow)")
    p.add_argument("--overlap_large", "-ol", type=float, default=0.6,
                   help="window overlap of the lighter models, 0..0.99 (higher: slower, smoother)")
    p.add_argument("--overlap_small", "-os", type=float, default=0.5,
                   help="window overlap of htdemucs_ft, 0..0.99")
    p.add_argument("--single_onnx", action="store_true", help="vocals from Kim_Vocal only (no Kim_Inst)")
    p.add_argument("--chunk_size", "-cz", type=int, default=1_000_000,
                   help="samples per MDX chunk (lower uses less GPU memory)")
    p.add_argument("--large_gpu", action="store_true", help="keep every model resident on the device")
    p.add_argument("--use_kim_model_1", action="store_true", help="use Kim_Vocal_1 instead of Kim_Vocal_2")
    p.add_argument("--only_vocals", action="store_true", help="only vocals and instrumental (no 4-stem models)")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device for torch and ONNX Runtime")
    p.add_argument("--model_dir", default=None,
                   help="model pack dir (default: $SPARK_MODELS_DIR, /models-cache, mvsep/models, demo pack)")
    p.add_argument("--shifts", type=int, default=1, help="demucs shift trick passes (seeded), 0..10")
    p.add_argument("--seed", type=int, default=0, help="seed of the demucs shifts")
    p.add_argument("--output_format", default="wav", choices=("wav", "wav16", "wav24", "flac", "mp3"),
                   help="wav = 32-bit float")
    p.add_argument("--sample_rate", default="native", choices=("native", "44100"),
                   help="stems at the input's rate (default) or at 44.1 kHz")
    p.add_argument("--mono", action="store_true", help="write mono stems")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"),
                   help="fp16: faster on a CUDA GPU, not the exact recipe (refused on the CPU)")
    p.add_argument("--recipe", default="mdx23", choices=("mdx23", "cinematic"),
                   help="mdx23: vocals/instrumental (+4 stems); cinematic: dialog, music, effects, background(2)")
    p.add_argument("--high_quality", action="store_true", help="cinematic: the mean of three checkpoints")
    p.add_argument("--layout", default="keep", choices=("keep", "center", "stereo"),
                   help="surround inputs: keep every channel pair, separate the centre only, or downmix")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sep = None
    try:
        from tqdm import tqdm

        from mvsep.engine import Options, Separator
        opts = Options(only_vocals=args.only_vocals, overlap_large=args.overlap_large,
                       overlap_small=args.overlap_small, chunk_size=args.chunk_size, shifts=args.shifts,
                       seed=args.seed, single_onnx=args.single_onnx, use_kim_model_1=args.use_kim_model_1,
                       output_format=args.output_format, sample_rate=args.sample_rate,
                       mono=args.mono, precision=args.precision, recipe=args.recipe,
                       high_quality=args.high_quality, layout=args.layout).validate()
        sep = Separator(args.model_dir, "cpu" if args.cpu else "auto", args.gpu_id, args.large_gpu)
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
