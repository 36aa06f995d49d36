"""The `spark` command: separate, submit, wait, download, list, cancel. Exit codes: see errors.py and --help."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from . import catalogue
from .api import Client
from .errors import Refused, SparkError

EXIT_CODES = """exit codes: 0 ok, 1 unexpected error, 2 usage, 3 wrong or missing token, 4 input or options refused
(by the server, or before the upload for what the server's catalogue rules out), 5 server unavailable or queue
full after every retry, 6 job failed, 7 job canceled, 8 no such job, 9 download incomplete, 10 a local input is
missing or unreadable, or a folder holds no media; 141 stdout closed early (e.g. `| head`), quietly.

output: separate and download both write <out>/<input name>/<stem>.<ext> (download --zip: stems.zip there); an
existing non-empty folder of that name gets the job id's first 8 digits appended, nothing is overwritten."""


def _server_catalogue(argv: list[str]) -> dict | None:
    """The server's catalogue for --help (2 s at most, no retries); None when it cannot be had."""
    server = os.environ.get("SPARK_SERVER", "http://127.0.0.1:8185")
    token = os.environ.get("SPARK_API_TOKEN")
    for i, arg in enumerate(argv):
        if arg == "--server" and i + 1 < len(argv):
            server = argv[i + 1]
        elif arg.startswith("--server="):
            server = arg.split("=", 1)[1]
    try:
        with Client(server, token, timeout=2.0, retries=0, max_wait=0) as c:
            return c.catalogue()
    except Exception:  # noqa: BLE001 (help works without a server)
        return None


def _parser(cat: dict | None = None) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("SPARK_SERVER", "http://127.0.0.1:8185"),
                        help="service URL (env SPARK_SERVER; default %(default)s)")
    common.add_argument("--token", default=None,
                        help="API token (default: env SPARK_API_TOKEN, which keeps it out of the process list)")
    common.add_argument("--json", action="store_true", help="print JSON on stdout for scripts")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument("--retries", type=int, default=6, help="retries after connection errors (default 6)")
    common.add_argument("--max-wait", type=float, default=900.0,
                        help="seconds to keep retrying while the queue is full (default 900)")
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--recipe", help="a recipe the server offers (below; default: the server's first)")
    opts.add_argument("--stems", help="comma list of the recipe's stems (below), or all (default: the recipe's)")
    opts.add_argument("--format", choices=["wav", "wav16", "wav24", "flac", "mp3"], help="wav is float32")
    opts.add_argument("--sample-rate", choices=["native", "44100"], help="native keeps the input's rate")
    opts.add_argument("--mono", action="store_true", default=None, help="one-channel stems")
    opts.add_argument("--layout", choices=["keep", "center", "stereo"],
                      help="surround inputs: every channel pair (keep), the centre only, or a stereo downmix")
    opts.add_argument("--high-quality", action="store_true", default=None,
                      help="cinematic: the mean of three checkpoints (3x the time)")
    opts.add_argument("--precision", choices=["fp32", "fp16"], help="fp16: CUDA servers only, not exact")
    opts.add_argument("--shifts", type=int)
    opts.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="any other option of the recipe (spark recipes lists them), e.g. --set overlap_large=0.8")
    recipes_text = catalogue.stems_help(cat)

    p = argparse.ArgumentParser(prog="spark", description="Client of the Spark separation service.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("separate", parents=[common, opts], help="submit, wait and download the stems",
                       epilog=recipes_text, formatter_class=raw)
    s.add_argument("inputs", nargs="+", help="media files, folders of media, or http(s) URLs")
    s.add_argument("--out", required=True, type=Path, help="folder for <input name>/<stem>.<ext>")
    s.add_argument("--keep", action="store_true", help="keep the jobs on the server (default: delete them)")
    s = sub.add_parser("submit", parents=[common, opts], help="queue jobs and print their ids", epilog=recipes_text,
                       formatter_class=raw)
    s.add_argument("inputs", nargs="+")
    s = sub.add_parser("wait", parents=[common], help="follow jobs until they end")
    s.add_argument("ids", nargs="+")
    s = sub.add_parser("download", parents=[common], help="download a finished job's stems (or its zip)")
    s.add_argument("id")
    s.add_argument("--out", type=Path, default=Path("."), help="folder for <input name>/<stem>.<ext>")
    s.add_argument("--stem", help="only this stem")
    s.add_argument("--zip", action="store_true", help="the zip of every stem instead (<input name>/stems.zip)")
    s = sub.add_parser("list", parents=[common], help="list jobs")
    s.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "canceled"])
    s.add_argument("--limit", type=int, default=100)
    s = sub.add_parser("cancel", parents=[common], help="cancel queued/running jobs, delete finished ones")
    s.add_argument("ids", nargs="+")
    sub.add_parser("recipes", parents=[common], help="the server's recipes, their stems and options")
    return p


def _extra(a) -> dict:
    out = {}
    for item in a.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise Refused(f"--set {item}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def _options(a) -> dict:
    named = {k: v for k, v in {"recipe": a.recipe, "stems": a.stems, "format": a.format,
                               "sample_rate": a.sample_rate, "mono": a.mono, "layout": a.layout,
                               "high_quality": a.high_quality, "precision": a.precision,
                               "shifts": a.shifts}.items() if v is not None}
    return {**_extra(a), **named}


def _inputs(c: Client, a) -> list[str]:
    """Every input checked before the first upload: local files readable, folders not empty, and what the server's
    catalogue rules out (an old server without GET /recipes: the server's own refusal decides)."""
    sources = catalogue.expand(a.inputs)
    try:
        cat = c.catalogue()
    except SparkError as e:
        if e.status != 404:
            raise
        cat = None
    catalogue.check(cat, {**_options(a), "extra": _extra(a)}, sources)
    return sources


def _job_folder(out: Path, name: str, job_id: str) -> Path:
    """<out>/<name>, or <out>/<name>_<id8> when a non-empty <out>/<name> is there already (never overwrite)."""
    folder = out / name
    if folder.exists() and any(folder.iterdir()):
        folder = out / f"{name}_{job_id[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _ext(job: dict) -> str:
    fmt = (job.get("options") or {}).get("format", "wav")
    return "wav" if fmt.startswith("wav") else fmt


class SteadyEta:
    """The server's ETA swings between stages: shown only once its last 4 estimates agree within 1.5x, then as a
    smoothed range (the page does the same)."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.recent, self.value, self.last, self.raw, self.steady = clock, [], None, None, None, False

    def words(self, raw: float | None) -> str:
        if raw is None:
            return ""
        now = self.clock()
        if raw != self.raw:
            aged = None if self.value is None else max(0.0, self.value - (now - self.last))
            self.value = raw if aged is None else 0.8 * aged + 0.2 * raw
            self.last, self.raw = now, raw
            self.recent = (self.recent + [raw])[-4:]
            self.steady = self.steady or (len(self.recent) == 4 and max(self.recent) <= 1.5 * min(self.recent))
        if not self.steady:
            return "estimating the time left"
        left = max(0.0, self.value - (now - self.last))
        if left < 60:
            return "under a minute left"
        lo, hi = max(1, int(left * 0.85 // 60)), -(-left * 1.15 // 60)
        return f"about {lo}-{max(int(hi), lo + 1)} min left"


class Bars:
    """One progress bar per job on stderr (plain lines per stage when stderr is not a terminal)."""

    def __init__(self, quiet: bool):
        self.quiet, self.tty = quiet, sys.stderr.isatty()
        self.lock, self.bars, self.stages = threading.Lock(), {}, {}

    def bar(self, key: str, desc: str, total: float, unit: str = "%"):
        if self.quiet or not self.tty:
            return None
        with self.lock:
            b = tqdm(total=total, desc=desc[:24], unit=unit, position=len(self.bars), leave=True,
                     unit_scale=unit == "B", file=sys.stderr, bar_format=None if unit == "B" else
                     "{desc}: {percentage:3.0f}%|{bar}| {postfix}")
            self.bars[key] = b
            return b

    def upload(self, name: str):
        b = self.bar("up:" + name, f"upload {name}", 1, "B")

        def cb(done, total):
            if b is not None:
                b.total = total
                b.update(done - b.n)
        return cb

    def job(self, name: str):
        b = self.bar("job:" + name, name, 100)
        eta = SteadyEta()

        def cb(job):
            stage = job.get("stage") or job["state"]
            if b is not None:
                b.update(round(job["progress"] * 100, 1) - b.n)
                left = eta.words(job.get("eta_s") if job["state"] == "running" else None)
                b.set_postfix_str(f"{stage}{', ' + left if left else ''}")
            elif not self.quiet and self.stages.get(name) != stage:
                self.stages[name] = stage
                print(f"{name}: {stage} ({job['progress'] * 100:.0f}%)", file=sys.stderr, flush=True)
        return cb

    def close(self):
        for b in self.bars.values():
            b.close()


def _separate(c: Client, a, bars: Bars) -> tuple[int, list[dict]]:
    results: list[dict] = []
    threads = []

    def follow(rec: dict):
        try:
            job = c.wait(rec["job_id"], bars.job(rec["name"]))
            out = _job_folder(a.out, rec["name"], rec["job_id"])
            rec["files"] = {s: str(c.download(rec["job_id"], out / f"{s}.{_ext(job)}", s)) for s in job["stems"]}
            rec["state"] = "succeeded"
            if not a.keep:
                c.cancel(rec["job_id"])
        except SparkError as e:
            rec.update(state="error", error=e.message, exit_code=e.exit_code)
        except Exception as e:  # noqa: BLE001 (reported per input; the others go on)
            rec.update(state="error", error=f"{type(e).__name__}: {e}", exit_code=1)

    for src in _inputs(c, a):
        name = Path(src.split("?")[0].rstrip("/")).stem or "media"
        rec = {"input": src, "name": name, "job_id": None}
        results.append(rec)
        try:
            up = bars.upload(Path(src).name) if not src.startswith(("http://", "https://")) else None
            rec["job_id"] = c.submit(src, _options(a), progress=up)["id"]
        except SparkError as e:
            rec.update(state="error", error=e.message, exit_code=e.exit_code)
            continue
        t = threading.Thread(target=follow, args=(rec,), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    codes = [r.get("exit_code", 0) for r in results]
    return next((code for code in codes if code), 0), results


def _run(a, c: Client, bars: Bars) -> int:
    out = None
    code = 0
    if a.command == "separate":
        code, out = _separate(c, a, bars)
        if not a.json:
            for r in out:
                print(f"{r['input']}: " + (", ".join(r["files"].values()) if r.get("files") else r["error"]))
    elif a.command == "submit":
        out = []
        for src in _inputs(c, a):
            up = bars.upload(Path(src).name) if not src.startswith(("http://", "https://")) else None
            job = c.submit(src, _options(a), progress=up)
            out.append(job)
            if not a.json:
                print(job["id"], flush=True)
    elif a.command == "wait":
        out = []
        for job_id in a.ids:
            try:
                out.append(c.wait(job_id, bars.job(job_id[:8])))
            except SparkError as e:
                out.append(e.job or {"id": job_id, "state": "error", "error": e.message})
                code = code or e.exit_code
                print(f"{job_id}: {e.message}", file=sys.stderr)
        if not a.json:
            for job in out:
                print(job["id"], job["state"])
    elif a.command == "download":
        job = c.job(a.id)
        folder = _job_folder(a.out, (job.get("input") or {}).get("name") or a.id[:8], a.id)
        stems = [None] if a.zip else ([a.stem] if a.stem else list(job["stems"]))
        out = [str(c.download(a.id, folder / (f"{s}.{_ext(job)}" if s else "stems.zip"), s,
                              bars.upload(f"{a.id[:8]} {s or 'zip'}"))) for s in stems]
        if not a.json:
            print("\n".join(out))
    elif a.command == "list":
        out = c.jobs(a.state, a.limit)
        if not a.json:
            for j in out:
                print(f"{j['id']}  {j['state']:<9} {j['progress'] * 100:5.1f}%  {j.get('stage') or '':<16} "
                      f"{(j.get('input') or {}).get('name') or ''}")
    elif a.command == "recipes":
        out = c.catalogue()
        if not a.json:
            print(catalogue.describe(out))
    elif a.command == "cancel":
        out = []
        for job_id in a.ids:
            job = c.cancel(job_id)
            out.append(job or {"id": job_id, "state": "deleted"})
            if not a.json:
                print(job_id, (job or {}).get("state", "deleted"))
    if a.json:
        print(json.dumps(out, indent=2, default=str))
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a closed pipe shows here, not at exit (where Python would print a traceback)
        return code
    except BrokenPipeError:  # `spark list --json | head`: the reader went away; end quietly, like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: list[str]) -> int:
    helping = any(arg in ("-h", "--help") for arg in argv)
    a = _parser(_server_catalogue(argv) if helping else None).parse_args(argv)
    token = a.token or os.environ.get("SPARK_API_TOKEN")
    bars = Bars(a.quiet or a.json and not sys.stderr.isatty())

    def on_retry(why: str, delay: float):
        if not a.quiet:
            print(f"retrying in {delay:.1f} s: {why}", file=sys.stderr, flush=True)

    try:
        with Client(a.server, token, retries=a.retries, max_wait=a.max_wait, on_retry=on_retry) as c:
            return _run(a, c, bars)
    except SparkError as e:
        if a.json:
            print(json.dumps({"error": e.code or type(e).__name__, "message": e.message, "status": e.status}))
        print(f"spark: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as e:  # noqa: BLE001 (a bug or an OS error: one line, never a traceback)
        print(f"spark: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        bars.close()


if __name__ == "__main__":
    sys.exit(main())
