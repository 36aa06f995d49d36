"""Start the separation service: `python server.py` (settings: HOST, PORT, SPARK_* env vars; docs/api.md)."""

import logging
import os
import resource
import sys

import uvicorn

from service.app import create_app
from service.config import Config
from service.connections import Limits, protocol_class

FD_RESERVE = 64  # descriptors kept for the database, job files, model files and threads


def connection_cap(wanted: int) -> int:
    """SPARK_MAX_CONNECTIONS, lowered so that open connections can never use up the descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - FD_RESERVE))


class QuietProbes(logging.Filter):
    """Drops the access-log line of a successful GET /health or /ready: the HEALTHCHECK and load balancers ask every
    few seconds, and those lines would bury the requests that matter. Failed probes are still logged."""

    PATHS = frozenset({"/health", "/ready"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:  # uvicorn: client, method, path, http version, status
            _, method, path, _, status = args
            return not (method == "GET" and path in self.PATHS and isinstance(status, int) and status < 400)
        return True


def main() -> int:
    cfg = Config.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = cfg.startup_problem()
    if problem:
        print(f"server.py: {problem}", file=sys.stderr)
        return 2
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    limits = Limits(cfg.header_timeout_s, cfg.body_timeout_s, connection_cap(cfg.max_connections))
    logging.getLogger("spark.server").info("at most %d connections; head timeout %g s, body timeout %g s",
                                           limits.max_connections, limits.header_timeout_s, limits.body_timeout_s)
    app = create_app(cfg)
    svc = app.state.services

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGTERM/SIGINT: requests waiting on a job answer 503 at once
            svc.begin_stop()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info", http=protocol_class(limits),
                                   timeout_keep_alive=cfg.keepalive_s, timeout_graceful_shutdown=5,
                                   proxy_headers=False))
    logging.getLogger("uvicorn.access").addFilter(QuietProbes())  # after uvicorn.Config set up its loggers
    svc.stop_server = lambda: setattr(server, "should_exit", True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT after its graceful shutdown: that is a clean stop
        logging.getLogger("spark.server").info("stopped by SIGINT")
    if svc.exit_code:
        logging.shutdown()
        os._exit(svc.exit_code)  # a stuck worker thread must not hold the exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
