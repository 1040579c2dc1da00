// An app for execution-role tests, zipped with its Dockerfile: it calls lmvm's own API from
// inside the MicroVM with the AWS SDKs' default credential chains and no keys configured, only
// the API's URL (api.txt, the test internet's relay to the API) and the region.
// - Node (:8080): @aws-sdk/client-lambda-microvms and its dependencies, copied from the host's
//   node_modules (their CommonJS builds only, about 3 MB), a new client per call.
// - Python (:8081): botocore (copied from the host's site-packages, without its service
//   models, with dateutil, jmespath, urllib3 and six): the default chain
//   (botocore.session.get_session().get_credentials()) and SigV4Auth signing the request.
// Both answer JSON:
// - GET /call?op=GetMicrovmImage&image=<name> | op=ListMicrovms | op=ListMicrovmImages:
//   {ok, status?, data?} or {ok:false, error (the error type, or the credentials error), message}
// - GET /imds?path=<path>&token=none|fresh|<token>: one raw request to http://169.254.169.254
//   (`fresh`: a token from PUT /latest/api/token first); {status, body}
// - GET /token: a new IMDSv2 token (to try it in another MicroVM)
// - GET /build: what the build's RUN step saw (its credentials document's Code, and what its
//   calls with them answered), and what the credentials the Node app fetched as it booted for
//   the build's snapshot, kept in the snapshot, may do now.
// - POST /aws/lambda-microvms/runtime/v1/ready (the image's /ready hook, on :8080): 200 once the
//   boot's credentials call has ended and the Python app listens.
// The RUN step (build_probe.py) and the app's boot run with the image's build role; the app's
// calls with the default chain, in its MicroVMs, with the MicroVM's execution role.

import { execFileSync } from "node:child_process";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./platform.js";

const NODE_APP = String.raw`
const http = require("node:http");
const fs = require("node:fs");
const { LambdaMicrovmsClient, GetMicrovmImageCommand, ListMicrovmsCommand, ListMicrovmImagesCommand } = require("@aws-sdk/client-lambda-microvms");
const { fromInstanceMetadata } = require("@smithy/credential-provider-imds");
const api = fs.readFileSync("/app/api.txt", "utf8").trim();

async function call(op, image, credentials) {
  const client = new LambdaMicrovmsClient({ endpoint: api, region: "us-east-1", maxAttempts: 1, ...(credentials ? { credentials } : {}) });
  try {
    const cmd = op === "GetMicrovmImage" ? new GetMicrovmImageCommand({ imageIdentifier: image })
      : op === "ListMicrovms" ? new ListMicrovmsCommand({})
      : new ListMicrovmImagesCommand({});
    const out = await client.send(cmd);
    delete out.$metadata;
    return { ok: true, data: out };
  } catch (e) {
    return { ok: false, error: e.name, message: e.message, status: e.$metadata && e.$metadata.httpStatusCode };
  } finally {
    client.destroy();
  }
}

function imds(method, path, headers) {
  return new Promise((resolve) => {
    const req = http.request({ host: "169.254.169.254", port: 80, method, path, headers, timeout: 3000, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => { req.destroy(); resolve({ status: 0, body: "timeout" }); });
    req.on("error", (e) => resolve({ status: 0, body: e.code || e.message }));
    req.end();
  });
}
const newToken = async () => (await imds("PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "300" })).body;

// At boot (the build's snapshot boot): credentials from the metadata service, kept in memory as
// an SDK client made at import time keeps them, so they are in the snapshot. No other connection
// is made at boot: one the app closes first would wait in TIME_WAIT at the checkpoint. /ready
// answers once that call has ended and the Python app listens, so the checkpoint never cuts a
// connection short (without it, the build gives the app a fixed 2 s, which a loaded machine can
// spend loading the SDK: the call was then still under way at the checkpoint).
let bootCreds, bootError;
const booted = fromInstanceMetadata({ timeout: 5000, maxRetries: 2 })().then((c) => (bootCreds = c), (e) => (bootError = String(e)));
const pythonListens = () => new Promise((resolve) => {
  const s = require("node:net").connect(8081, "127.0.0.1");
  s.once("connect", () => { s.resetAndDestroy(); resolve(true); });
  s.once("error", () => resolve(false));
});

http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const q = url.searchParams;
  let out;
  if (url.pathname === "/aws/lambda-microvms/runtime/v1/ready") {
    await booted;
    return res.writeHead((await pythonListens()) ? 200 : 503).end();
  }
  if (url.pathname === "/call") out = await call(q.get("op"), q.get("image"));
  else if (url.pathname === "/imds") {
    const t = q.get("token") || "none";
    const token = t === "none" ? undefined : t === "fresh" ? await newToken() : t;
    out = await imds("GET", q.get("path"), token ? { "x-aws-ec2-metadata-token": token } : {});
  } else if (url.pathname === "/token") out = { token: await newToken() };
  else if (url.pathname === "/build") {
    await booted;
    let run = {};
    try { run = JSON.parse(fs.readFileSync("/app/build-imds.json", "utf8")); } catch (e) { run = { error: String(e) }; }
    // What the credentials the snapshot kept may do (the build role's).
    const boot = bootCreds ? { listImages: await call("ListMicrovmImages", undefined, bootCreds), listMicrovms: await call("ListMicrovms", undefined, bootCreds) } : { error: bootError };
    out = { run, boot };
  } else out = { error: "no such path" };
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ app: "node", ...out }));
}).listen(8080, "0.0.0.0");
console.log("node execution-role app up");
`;

const PYTHON_COMMON = String.raw`
import json, sys, urllib.error, urllib.request
sys.path.insert(0, "/app/pylib")
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

API = open("/app/api.txt").read().strip()
PATHS = {"GetMicrovmImage": "/2025-09-09/microvm-images/{image}", "ListMicrovms": "/2025-09-09/microvms", "ListMicrovmImages": "/2025-09-09/microvm-images"}

def call(op, image=None):
    creds = botocore.session.get_session().get_credentials()
    if creds is None:
        return {"ok": False, "error": "NoCredentialsError", "message": "botocore found no credentials"}
    url = API + PATHS[op].format(image=image)
    req = AWSRequest(method="GET", url=url, headers={})
    SigV4Auth(creds.get_frozen_credentials(), "lambda", "us-east-1").add_auth(req)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET", headers=dict(req.headers.items())), timeout=10) as r:
            return {"ok": True, "status": r.status, "data": json.loads(r.read() or b"{}"), "accessKeyId": creds.access_key[:4]}
    except urllib.error.HTTPError as e:
        body = e.read()
        try: doc = json.loads(body or b"{}")
        except ValueError: doc = {"message": body.decode("utf8", "replace")}
        return {"ok": False, "status": e.code, "error": e.headers.get("x-amzn-errortype", "").split(":")[0], "message": doc.get("message") or doc.get("Message")}
`;

const BUILD_PROBE = String.raw`
import http.client
${"${COMMON}"}
def imds(method, path, headers):
    c = http.client.HTTPConnection("169.254.169.254", 80, timeout=3)
    try:
        c.request(method, path, headers=headers)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()

out = {}
try:
    st, token = imds("PUT", "/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"})
    st, listing = imds("GET", "/latest/meta-data/iam/security-credentials/", {"x-aws-ec2-metadata-token": token})
    out["listing"] = listing
    st, doc = imds("GET", "/latest/meta-data/iam/security-credentials/" + listing, {"x-aws-ec2-metadata-token": token})
    out["code"] = json.loads(doc).get("Code")
except Exception as e:
    out["error"] = type(e).__name__ + ": " + str(e)
try:
    out["listImages"] = call("ListMicrovmImages")
    out["listMicrovms"] = call("ListMicrovms")
except Exception as e:
    out["callError"] = type(e).__name__ + ": " + str(e)
json.dump(out, open("/app/build-imds.json", "w"))
print("build probe:", json.dumps(out)[:300])
`;

const PYTHON_APP = String.raw`
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
${"${COMMON}"}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        try:
            out = call(q["op"], q.get("image")) if u.path == "/call" else {"error": "no such path"}
        except Exception as e:
            out = {"ok": False, "error": type(e).__name__, "message": str(e)}
        body = json.dumps({"app": "python", **out}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer.daemon_threads = True
print("python execution-role app up", flush=True)
ThreadingHTTPServer(("0.0.0.0", 8081), Handler).serve_forever()
`;

/** The SDK packages the Node app needs: @aws-sdk/client-lambda-microvms and what it depends on, found from the host's node_modules. */
function sdkClosure(root: string): string[] {
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const pj = JSON.parse(readFileSync(join(root, name, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
    for (const d of Object.keys(pj.dependencies ?? {})) visit(d);
  };
  visit("@aws-sdk/client-lambda-microvms");
  return [...seen];
}

const HOST_SITE_PACKAGES = () => {
  const found = execFileSync("python3", ["-c", "import botocore, os; print(os.path.dirname(os.path.dirname(botocore.__file__)))"], { encoding: "utf8" }).trim();
  return found;
};

/**
 * The app's zip: Dockerfile, the apps, the API's URL, and the SDKs. The Dockerfile's RUN step
 * probes the build role's credentials (the image must reach `apiUrl`: INTERNET_EGRESS).
 */
export function executionRoleAppZip(apiUrl: string): Buffer {
  const stage = tempDir("lmvm-exec-role-app-");
  const modules = join(import.meta.dirname, "..", "..", "..", "node_modules");
  for (const pkg of sdkClosure(modules)) {
    // CommonJS only: the ES module and type builds are most of each package's size.
    cpSync(join(modules, pkg), join(stage, "node_modules", pkg), { recursive: true, dereference: true, filter: (src) => !/[/\\](dist-es|dist-types)$/.test(src) });
  }
  const site = HOST_SITE_PACKAGES();
  for (const mod of ["botocore", "dateutil", "jmespath", "urllib3", "six.py"]) {
    // botocore's service models (data/<service>/) are 26 MB; credentials and SigV4 need none of them.
    const keep = (src: string) => !/__pycache__$/.test(src) && (!/[/\\]botocore[/\\]data[/\\][^/\\]+$/.test(src) || /\.json$/.test(src));
    cpSync(join(site, mod), join(stage, "pylib", mod), { recursive: true, dereference: true, filter: keep });
  }
  const files: Record<string, string> = {
    Dockerfile: "FROM lmvm/debian12\nWORKDIR /app\nCOPY . .\nRUN python3 build_probe.py\nCMD [\"sh\", \"-c\", \"python3 -u app.py & exec node app.js\"]\n",
    "api.txt": `${apiUrl}\n`,
    "app.js": NODE_APP,
    "app.py": PYTHON_APP.replace("${COMMON}", PYTHON_COMMON),
    "build_probe.py": BUILD_PROBE.replace("${COMMON}", PYTHON_COMMON),
  };
  for (const [name, content] of Object.entries(files)) writeFileSync(join(stage, name), content);
  const zip = join(tempDir("lmvm-exec-role-zip-"), "app");
  try {
    execFileSync("python3", ["-c", "import shutil, sys; shutil.make_archive(sys.argv[1], 'zip', sys.argv[2])", zip, stage]);
    return readFileSync(`${zip}.zip`);
  } finally {
    rmSync(stage, { recursive: true, force: true });
    rmSync(`${zip}.zip`, { force: true });
  }
}
