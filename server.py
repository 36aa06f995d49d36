"""Start the separation service: `python server.py` (settings: HOST, PORT, SPARK_* env vars; docs/api.md)."""

import logging
import sys

import uvicorn

from service.app import create_app
from service.config import Config


def main() -> int:
    cfg = Config.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = cfg.startup_problem()
    if problem:
        print(f"server.py: {problem}", file=sys.stderr)
        return 2
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="info",
                timeout_graceful_shutdown=5, proxy_headers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
