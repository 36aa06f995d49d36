"""Start the separation service: `python server.py` (settings: HOST, PORT, SPARK_* env vars; docs/api.md)."""

import logging
import os
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
    app = create_app(cfg)
    svc = app.state.services

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGTERM/SIGINT: requests waiting on a job answer 503 at once
            svc.begin_stop()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info",
                                   timeout_graceful_shutdown=5, proxy_headers=False))
    svc.stop_server = lambda: setattr(server, "should_exit", True)
    server.run()
    if svc.exit_code:
        logging.shutdown()
        os._exit(svc.exit_code)  # a stuck worker thread must not hold the exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
