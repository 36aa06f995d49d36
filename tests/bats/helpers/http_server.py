"""A static file server for the boot-chain tests, bound to 127.0.0.1 only.

Unlike `python -m http.server` it answers HTTP Range requests (so resumed downloads can be shown), logs every
request as one JSON line (path, Range header, status) to --log, and can cut a transfer short: for each
`--cut NAME:BYTES`, the first GET of NAME sends BYTES bytes of the body and closes the connection.

usage: python http_server.py DIR --port-file FILE [--log FILE] [--cut NAME:BYTES]...
It writes the port it got to --port-file once listening (port 0 = any free port).
PUT stores the body under DIR (for presigned-upload style tests), answering 201.
"""
import argparse
import functools
import json
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    cuts: dict = {}
    log_path = None
    lock = threading.Lock()

    def log_message(self, *args):  # quiet; the JSON log is the record
        pass

    def _record(self, status):
        if self.log_path:
            with self.lock, open(self.log_path, "a") as f:
                f.write(json.dumps({"path": self.path, "range": self.headers.get("Range"),
                                    "status": status}) + "\n")

    def do_PUT(self):
        path = self.translate_path(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            while length > 0:
                block = self.rfile.read(min(length, 1 << 20))
                if not block:
                    break
                f.write(block)
                length -= len(block)
        os.replace(path + ".tmp", path)
        self._record(201)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.translate_path(self.path)
        name = os.path.basename(path)
        if not os.path.isfile(path):
            self._record(404)
            return self.send_error(404)
        size = os.path.getsize(path)
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            if start >= size:
                self._record(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        status = 206 if m else 200
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(size - start))
        if m:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            limit = None
            with self.lock:
                if name in self.cuts:
                    limit = self.cuts.pop(name)  # only the first GET of this file is cut
            body = f.read() if limit is None else f.read(limit)
        self.wfile.write(body)
        if limit is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("--cut", action="append", default=[])
    a = ap.parse_args()
    Handler.log_path = a.log
    Handler.cuts = {n: int(b) for n, b in (c.rsplit(":", 1) for c in a.cut)}
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), functools.partial(Handler, directory=a.dir))
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
