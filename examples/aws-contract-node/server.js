// An app written only from the AWS Lambda MicroVMs documentation
// (https://docs.aws.amazon.com/lambda/latest/dg/microvms-launching.html):
// - lifecycle hooks are POSTs to /aws/lambda-microvms/runtime/v1/<hook> on the
//   image's hooks port (9000 here), called from inside the MicroVM, so the
//   hooks server listens on 127.0.0.1 only and refuses any other caller;
// - /run's body is JSON {"microvmId", "runHookPayload"}, the payload a string
//   (a JSON payload arrives encoded twice);
// - ready and validate answer 503 until the app is initialised;
// - AWS_REGION and AWS_LAMBDA_MICROVM_IMAGE_{NAME,ARN,VERSION} are set.
// Port 8080: GET / counts requests; GET /hooks tells what the app saw: every
// hook call (its caller's address, Host header and body), the reserved
// variables in its environment and in its build's RUN step (build-env.txt).
// A runHookPayload of {"runStatus": N} makes /run answer N, and one of
// {"runDelaySeconds": N} makes it answer N seconds late, to show what a failed
// or timed-out /run does.
const http = require("node:http");
const { readFileSync } = require("node:fs");
const { randomUUID } = require("node:crypto");

const HOOKS = "/aws/lambda-microvms/runtime/v1/";
const RESERVED = ["AWS_REGION", "AWS_LAMBDA_MICROVM_IMAGE_NAME", "AWS_LAMBDA_MICROVM_IMAGE_ARN", "AWS_LAMBDA_MICROVM_IMAGE_VERSION"];
const env = Object.fromEntries(RESERVED.map((k) => [k, process.env[k] ?? null]));
const buildEnv = Object.fromEntries(readFileSync("/app/build-env.txt", "utf8").split("\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
const calls = [];
let requests = 0;
let instanceId = null;
let initialised = false;
setTimeout(() => (initialised = true), 500); // stands for expensive initialisation

function json(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
}

const effects = {
  ready: () => ({ status: initialised ? 200 : 503 }),
  validate: () => ({ status: initialised ? 200 : 503 }),
  run: async (body) => {
    const { microvmId, runHookPayload } = JSON.parse(body);
    let asked = {};
    try {
      asked = JSON.parse(runHookPayload) ?? {};
    } catch {}
    if (asked.runDelaySeconds) await new Promise((resolve) => setTimeout(resolve, asked.runDelaySeconds * 1000));
    instanceId = randomUUID(); // every MicroVM starts from the same snapshot: make what must differ now
    return { status: asked.runStatus ?? 200, microvmId, payload: runHookPayload };
  },
  resume: () => ({ status: 200 }),
  suspend: () => ({ status: 200 }),
  terminate: () => ({ status: 200 }),
};

http.createServer((req, res) => {
  if (req.url === "/hooks") return json(res, 200, { calls, env, buildEnv });
  requests += 1;
  json(res, 200, { app: "aws-contract-node", requests, instanceId });
}).listen(8080, "0.0.0.0");

http.createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    const from = req.socket.remoteAddress;
    if (from !== "127.0.0.1") return json(res, 403, { message: `hooks are called from 127.0.0.1, not ${from}` });
    const hook = req.method === "POST" && req.url.startsWith(HOOKS) ? req.url.slice(HOOKS.length) : "";
    const effect = effects[hook];
    if (!effect) return json(res, 404, { message: `no hook at ${req.method} ${req.url}` });
    const { status, ...details } = await effect(body);
    if (status === 200) calls.push({ hook, from, host: req.headers.host, body, ...details });
    console.log(`hook ${hook}: ${status}`);
    json(res, status, { hook, status });
  });
}).listen(9000, "127.0.0.1");

console.log(`aws-contract-node: app on 8080, hooks on 127.0.0.1:9000, ${JSON.stringify(env)}`);
