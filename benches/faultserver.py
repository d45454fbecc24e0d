#!/usr/bin/env python3
"""A static file server on 127.0.0.1 that misbehaves on request, for benches/faults.sh.

    faultserver.py DIR --port-file FILE --faults FILE --log FILE [--port N]

Serves DIR (GET and HEAD, If-Modified-Since; no Range: a full 200 answers a ranged
request, which HTTP allows). Before each request it reads the faults file (JSON, a list,
re-read whenever it changed; missing or empty means no fault) and applies the first rule
whose "match" is a substring of the request path and that has "times" left (-1: always):

    {"match": ".deb", "kind": "drop", "times": 1, "after": 1000}
        drop:           send the headers and the first "after" bytes, then close
        reset:          close the connection before answering
        stall:          send the headers and the first "after" bytes, then nothing for
                        "seconds" (the client's timeout is what ends it)
        slow:           send the body "chunk" bytes every "delay" seconds
        status:         answer "code" (default 500) with a short body
        redirect-loop:  answer 302 to the same path with ?loop=N+1, forever

Each request is logged as one line "METHOD PATH STATUS FAULT" in the log file, and a
request that gets a fault also as "METHOD PATH taken FAULT" when it starts. Listens on
127.0.0.1 only, on a free port (or --port: to serve a kept run's fixtures again) written
to the port file once it listens.
"""

import argparse
import email.utils
import http.server
import json
import os
import posixpath
import socket
import sys
import threading
import time
import urllib.parse


class State:
    def __init__(self, faults_path, log_path):
        self.faults_path = faults_path
        self.log_path = log_path
        self.lock = threading.Lock()
        self.stamp = None
        self.rules = []

    def take(self, path):
        """The fault for PATH (counting it down), or None."""
        with self.lock:
            try:
                st = os.stat(self.faults_path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                stamp = None
            if stamp != self.stamp:
                self.stamp = stamp
                self.rules = []
                if stamp is not None:
                    with open(self.faults_path) as f:
                        text = f.read().strip()
                    self.rules = json.loads(text) if text else []
            for rule in self.rules:
                times = rule.get("times", -1)
                if rule.get("match", "") in path and times != 0:
                    if times > 0:
                        rule["times"] = times - 1
                    return dict(rule)
            return None

    def log(self, line):
        with self.lock:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultserver"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        self.answer(head=False)

    def answer(self, head):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        fault = self.server.state.take(path)
        kind = fault["kind"] if fault else "-"
        if fault:
            # Logged at once too: a stalled answer ends (and is logged) much later.
            self.server.state.log(f"{self.command} {path} taken {kind}")
        try:
            status = self.serve(path, url.query, fault, head)
        except (BrokenPipeError, ConnectionResetError):
            status = "gone"
        self.server.state.log(f"{self.command} {path} {status} {kind}")

    def simple(self, code, text, extra=()):
        body = text.encode()
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return code

    def serve(self, path, query, fault, head):
        kind = fault["kind"] if fault else None
        if kind == "reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return "reset"
        if kind == "status":
            return self.simple(int(fault.get("code", 500)), "injected error\n")
        if kind == "redirect-loop":
            n = 0
            for part in query.split("&"):
                if part.startswith("loop="):
                    n = int(part[5:] or 0)
            target = urllib.parse.quote(path) + f"?loop={n + 1}"
            return self.simple(302, "again\n", [("Location", target)])
        # The file, never outside the served directory.
        parts = [p for p in posixpath.normpath(path).split("/") if p not in ("", ".", "..")]
        full = os.path.join(self.server.directory, *parts)
        if os.path.isdir(full):
            full = os.path.join(full, "index.html")
        try:
            f = open(full, "rb")
        except OSError:
            return self.simple(404, "not found\n")
        with f:
            st = os.fstat(f.fileno())
            since = self.headers.get("If-Modified-Since")
            if since and kind is None:
                try:
                    when = email.utils.parsedate_to_datetime(since).timestamp()
                    if int(st.st_mtime) <= when:
                        self.send_response(304)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return 304
                except (TypeError, ValueError):
                    pass
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        if head:
            return 200
        if kind in ("drop", "stall"):
            after = min(int(fault.get("after", 0)), len(body))
            self.wfile.write(body[:after])
            self.wfile.flush()
            if kind == "stall":
                time.sleep(float(fault.get("seconds", 60)))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return f"200-{kind}@{after}"
        if kind == "slow":
            chunk = max(1, int(fault.get("chunk", 4096)))
            delay = float(fault.get("delay", 0.2))
            for i in range(0, len(body), chunk):
                self.wfile.write(body[i : i + chunk])
                self.wfile.flush()
                time.sleep(delay)
            return "200-slow"
        self.wfile.write(body)
        return 200


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients that hang up (timeouts, killed runs) are the point here, not errors.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("directory")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--faults", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=0, help="(default: a free one)")
    args = ap.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.directory = os.path.abspath(args.directory)
    server.state = State(args.faults, args.log)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.rename(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
