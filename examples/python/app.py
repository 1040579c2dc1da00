# A Python app on the standard library only: it initialises once (the part a
# snapshot saves), serves a small key-value store on 8080, and implements the
# lifecycle hooks on 9000, each server on a thread of its own.
#
#   GET  /          a greeting, how many requests it served, its uptime
#   GET  /items     what was stored
#   PUT  /items/<k> stores the request body under <k>
#
# /ready answers 503 until initialisation is done; /validate checks it.
# Every clone of a snapshot starts with the same memory, so /run and /resume
# re-seed Python's random generator (see "Snapshots and uniqueness" in the README).

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

HOOKS = "/aws/lambda-microvms/runtime/v1/"
started = time.monotonic()
state = {"ready": False, "requests": 0, "items": {}, "hooks": [], "table": None}
lock = threading.Lock()


def initialise():
    # Stands for expensive start-up work (loading a model, warming a cache).
    state["table"] = [i * i for i in range(200_000)]
    time.sleep(0.5)
    state["ready"] = True


class App(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            state["requests"] += 1
            if self.path == "/items":
                return self.reply(200, state["items"])
            self.reply(200, {
                "hello": "world",
                "language": "python",
                "requests": state["requests"],
                "uptimeSeconds": round(time.monotonic() - started, 3),
                "hooks": state["hooks"],
            })

    def do_PUT(self):
        if not self.path.startswith("/items/"):
            return self.reply(404, {"message": "PUT /items/<key>"})
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        with lock:
            state["requests"] += 1
            state["items"][self.path[len("/items/"):]] = body
            self.reply(200, {"stored": self.path[len("/items/"):]})

    def log_message(self, fmt, *args):
        print("app:", fmt % args)


class Hooks(BaseHTTPRequestHandler):
    # HTTP/1.0 (http.server's default): every answer closes its connection.
    def do_POST(self):
        hook = self.path[len(HOOKS):] if self.path.startswith(HOOKS) else ""
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if hook in ("ready", "validate"):
            status = 200 if state["ready"] and state["table"][1000] == 1_000_000 else 503
        elif hook in ("run", "resume", "suspend", "terminate"):
            if hook in ("run", "resume"):
                random.seed()  # clones must not share the snapshot's random state
            with lock:
                state["hooks"].append(hook)
            status = 200
        else:
            status = 404
        self.send_response(status)
        self.end_headers()

    def log_message(self, fmt, *args):
        print("hooks:", fmt % args)


if __name__ == "__main__":
    threading.Thread(target=initialise, daemon=True).start()
    hooks = HTTPServer(("0.0.0.0", 9000), Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    print("listening on 8080 (app) and 9000 (hooks)")
    ThreadingHTTPServer(("0.0.0.0", 8080), App).serve_forever()
