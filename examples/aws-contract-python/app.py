# An app written only from the AWS Lambda MicroVMs documentation
# (https://docs.aws.amazon.com/lambda/latest/dg/microvms-launching.html):
# - lifecycle hooks are POSTs to /aws/lambda-microvms/runtime/v1/<hook> on the
#   image's hooks port (9000 here), called from inside the MicroVM, so the
#   hooks server listens on 127.0.0.1 only and refuses any other caller;
# - /run's body is JSON {"microvmId", "runHookPayload"}, the payload a string
#   (a JSON payload arrives encoded twice);
# - ready and validate answer 503 until the app is initialised;
# - AWS_REGION and AWS_LAMBDA_MICROVM_IMAGE_{NAME,ARN,VERSION} are set.
# Port 8080: GET / counts requests; GET /hooks tells what the app saw: every
# hook call (its caller's address, Host header and body), the reserved
# variables in its environment and in its build's RUN step (build-env.txt).
# A runHookPayload of {"runStatus": N} makes /run answer N, and one of
# {"runDelaySeconds": N} makes it answer N seconds late, to show what a failed
# or timed-out /run does.

import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

HOOKS = "/aws/lambda-microvms/runtime/v1/"
RESERVED = ["AWS_REGION", "AWS_LAMBDA_MICROVM_IMAGE_NAME", "AWS_LAMBDA_MICROVM_IMAGE_ARN", "AWS_LAMBDA_MICROVM_IMAGE_VERSION"]
env = {k: os.environ.get(k) for k in RESERVED}
with open("/app/build-env.txt") as f:
    build_env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
state = {"initialised": False, "requests": 0, "instance_id": None, "calls": []}
lock = threading.Lock()


def initialise():
    time.sleep(0.5)  # stands for expensive initialisation
    state["initialised"] = True


def reply(handler, status, value):
    data = json.dumps(value).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class App(BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            if self.path == "/hooks":
                return reply(self, 200, {"calls": state["calls"], "env": env, "buildEnv": build_env})
            state["requests"] += 1
            reply(self, 200, {"app": "aws-contract-python", "requests": state["requests"], "instanceId": state["instance_id"]})

    def log_message(self, fmt, *args):
        pass


class Hooks(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        caller = self.client_address[0]
        if caller != "127.0.0.1":
            return reply(self, 403, {"message": f"hooks are called from 127.0.0.1, not {caller}"})
        hook = self.path[len(HOOKS):] if self.path.startswith(HOOKS) else ""
        details = {}
        if hook in ("ready", "validate"):
            status = 200 if state["initialised"] else 503
        elif hook == "run":
            run = json.loads(body)
            try:
                asked = json.loads(run["runHookPayload"])
            except ValueError:
                asked = None
            asked = asked if isinstance(asked, dict) else {}
            time.sleep(asked.get("runDelaySeconds", 0))
            status = asked.get("runStatus", 200)
            # Every MicroVM starts from the same snapshot: make what must differ now.
            state["instance_id"] = str(uuid.uuid4())
            details = {"microvmId": run["microvmId"], "payload": run["runHookPayload"]}
        elif hook in ("resume", "suspend", "terminate"):
            status = 200
        else:
            return reply(self, 404, {"message": f"no hook at POST {self.path}"})
        if status == 200:
            with lock:
                state["calls"].append({"hook": hook, "from": caller, "host": self.headers.get("host"), "body": body, **details})
        print(f"hook {hook}: {status}")
        reply(self, status, {"hook": hook, "status": status})

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    threading.Thread(target=initialise, daemon=True).start()
    hooks = HTTPServer(("127.0.0.1", 9000), Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    print(f"aws-contract-python: app on 8080, hooks on 127.0.0.1:9000, {json.dumps(env)}")
    ThreadingHTTPServer(("0.0.0.0", 8080), App).serve_forever()
