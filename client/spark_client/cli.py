"""The `spark` command: separate, submit, wait, download, list, cancel. Exit codes: see errors.py and --help."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from .api import Client
from .errors import SparkError

MEDIA = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wma", ".aif", ".aiff", ".mp4", ".mkv",
         ".mov", ".avi", ".webm", ".mka", ".ts", ".mxf"}
EXIT_CODES = """exit codes: 0 ok, 1 unexpected error, 2 usage, 3 wrong or missing token, 4 input or options refused,
5 server unavailable or queue full after every retry, 6 job failed, 7 job canceled, 8 no such job,
9 download incomplete"""


def _parser() -> argparse.ArgumentParser:
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
    opts.add_argument("--recipe", help="mdx23 or cinematic (default: the server's)")
    opts.add_argument("--stems", help="comma list of vocals, instrumental, drums, bass, other; or all")
    opts.add_argument("--format", choices=["wav", "wav16", "wav24", "flac", "mp3"])
    opts.add_argument("--sample-rate", choices=["native", "44100"])
    opts.add_argument("--mono", action="store_true", default=None)
    opts.add_argument("--shifts", type=int)

    p = argparse.ArgumentParser(prog="spark", description="Client of the Spark separation service.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("separate", parents=[common, opts], help="submit, wait and download the stems")
    s.add_argument("inputs", nargs="+", help="media files, folders of media, or http(s) URLs")
    s.add_argument("--out", required=True, type=Path, help="folder for <input name>/<stem>.<ext>")
    s.add_argument("--keep", action="store_true", help="keep the jobs on the server (default: delete them)")
    s = sub.add_parser("submit", parents=[common, opts], help="queue jobs and print their ids")
    s.add_argument("inputs", nargs="+")
    s = sub.add_parser("wait", parents=[common], help="follow jobs until they end")
    s.add_argument("ids", nargs="+")
    s = sub.add_parser("download", parents=[common], help="download a finished job's stems (or its zip)")
    s.add_argument("id")
    s.add_argument("--out", type=Path, default=Path("."))
    s.add_argument("--stem", help="only this stem")
    s.add_argument("--zip", action="store_true", help="the zip of every stem instead")
    s = sub.add_parser("list", parents=[common], help="list jobs")
    s.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "canceled"])
    s.add_argument("--limit", type=int, default=100)
    s = sub.add_parser("cancel", parents=[common], help="cancel queued/running jobs, delete finished ones")
    s.add_argument("ids", nargs="+")
    return p


def _options(a) -> dict:
    return {k: v for k, v in {"recipe": a.recipe, "stems": a.stems, "format": a.format,
                              "sample_rate": a.sample_rate, "mono": a.mono, "shifts": a.shifts}.items()
            if v is not None}


def _expand(inputs: list[str]) -> list[str]:
    out = []
    for item in inputs:
        p = Path(item)
        if item.startswith(("http://", "https://")) or not p.is_dir():
            out.append(item)
        else:
            out += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA)
    return out


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

        def cb(job):
            stage = job.get("stage") or job["state"]
            if b is not None:
                b.update(round(job["progress"] * 100, 1) - b.n)
                eta = f", ~{job['eta_s']:.0f} s left" if job.get("eta_s") is not None else ""
                b.set_postfix_str(f"{stage}{eta}")
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
            out = a.out / rec["name"]
            if out.exists() and any(out.iterdir()):
                out = a.out / f"{rec['name']}_{rec['job_id'][:8]}"
            out.mkdir(parents=True, exist_ok=True)
            fmt = (job.get("options") or {}).get("format", "wav")
            ext = "wav" if fmt.startswith("wav") else fmt
            rec["files"] = {s: str(c.download(rec["job_id"], out / f"{s}.{ext}", s)) for s in job["stems"]}
            rec["state"] = "succeeded"
            if not a.keep:
                c.cancel(rec["job_id"])
        except SparkError as e:
            rec.update(state="error", error=e.message, exit_code=e.exit_code)
        except Exception as e:  # noqa: BLE001 (reported per input; the others go on)
            rec.update(state="error", error=f"{type(e).__name__}: {e}", exit_code=1)

    for src in _expand(a.inputs):
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
        for src in _expand(a.inputs):
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
        a.out.mkdir(parents=True, exist_ok=True)
        stems = [None] if a.zip else ([a.stem] if a.stem else list(job["stems"]))
        out = [str(c.download(a.id, a.out, s, bars.upload(f"{a.id[:8]} {s or 'zip'}"))) for s in stems]
        if not a.json:
            print("\n".join(out))
    elif a.command == "list":
        out = c.jobs(a.state, a.limit)
        if not a.json:
            for j in out:
                print(f"{j['id']}  {j['state']:<9} {j['progress'] * 100:5.1f}%  {j.get('stage') or '':<16} "
                      f"{(j.get('input') or {}).get('name') or ''}")
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
    a = _parser().parse_args(argv)
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
    finally:
        bars.close()


if __name__ == "__main__":
    sys.exit(main())
