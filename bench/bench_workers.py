"""Jobs per hour of the service with 1 and with 2 workers on the same batch of clips (real server, real HTTP).

    python bench/bench_workers.py [--clips 8] [--seconds 15] [--pack small|full] [--gpus cpu|cpu,cpu|0|0,1]

Each run starts `server.py` with SPARK_GPUS set (one torch/ONNX thread per CPU worker), submits every clip at
once and times the batch from the first submit to the last job done. Prints jobs/hour per setting and the ratio.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from testkit import toypack  # noqa: E402
from testkit.service import Server, make_wav, wait_job  # noqa: E402


def run_batch(tmp: Path, pack: Path, clips: list[Path], gpus: str, threads: int) -> float:
    """Seconds for the whole batch."""
    device = "cpu" if gpus.startswith("cpu") else "auto"
    srv = Server(tmp / f"data-{gpus.replace(',', '_')}", pack, SPARK_GPUS=gpus, SPARK_DEVICE=device,
                 SPARK_WORKER_THREADS=threads, SPARK_QUEUE_SIZE=len(clips) + 1).start()
    try:
        with srv.client(timeout=600) as c:
            t0 = time.monotonic()
            ids = []
            for clip in clips:
                with open(clip, "rb") as f:
                    r = c.post("/jobs", files={"file": (clip.name, f)}, data={"stems": "vocals"})
                r.raise_for_status()
                ids.append(r.json()["id"])
            for job_id in ids:
                job = wait_job(c, job_id, timeout=3600)
                if job["state"] != "succeeded":
                    raise SystemExit(f"job {job_id} {job['state']}: {job['error']}")
            wall = time.monotonic() - t0
            workers = c.get("/status").json()["workers"]
            print(f"  {gpus:>8}: {len(clips)} jobs in {wall:.1f} s; busy s per worker "
                  + ", ".join(f"{w['busy_s']:.1f}" for w in workers), flush=True)
            return wall
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--pack", choices=("small", "full"), default="small")
    ap.add_argument("--gpus", default="cpu,cpu", help="the multi-worker setting (one worker: its first item)")
    ap.add_argument("--threads", type=int, default=1, help="torch/ONNX threads per CPU worker")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pack = toypack.build_pack(tmp / "pack", kind="random", stems="vocals", size=args.pack)
        clips = [make_wav(tmp / f"clip{i}.wav", args.seconds, seed=i) for i in range(args.clips)]
        one = args.gpus.split(",")[0]
        print(f"{args.clips} clips of {args.seconds:g} s, {args.pack} pack, vocals+instrumental, "
              f"{args.threads} thread(s) per CPU worker")
        t1 = run_batch(tmp, pack, clips, one, args.threads)
        t2 = run_batch(tmp, pack, clips, args.gpus, args.threads)
    jph1, jph2 = 3600 * args.clips / t1, 3600 * args.clips / t2
    print(f"jobs/hour: 1 worker {jph1:.0f}, {len(args.gpus.split(','))} workers {jph2:.0f}, ratio {jph2 / jph1:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
