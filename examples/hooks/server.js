// The six lifecycle hooks, each with an effect you can see. lmvm (like AWS)
// POSTs to http://localhost:9000/aws/lambda-microvms/runtime/v1/<hook>, from 127.0.0.1 inside the MicroVM:
// - ready     (build): 503 until the app has initialised, then 200; the snapshot follows
// - validate  (build): on a fresh sandbox restored from that snapshot, checks the app answers;
//             the build fails unless it says 200
// - run       (each MicroVM): JSON body {"microvmId", "runHookPayload"}, the payload the
//             RunMicrovm string ("" when none was given); makes what must differ per
//             MicroVM (instanceId), since every MicroVM starts from the same snapshot
// - suspend / resume: around the MicroVM's checkpoint and restore
// - terminate: before the MicroVM ends; its line is in `lmvm logs microvm <id>`
// Port 8080: GET /hooks lists the calls this MicroVM's memory holds; any other
// GET counts requests, a state that a suspend and resume keep.
const http = require("node:http");
const { randomUUID } = require("node:crypto");

const HOOKS = "/aws/lambda-microvms/runtime/v1/";
const calls = [];
let requests = 0;
let instanceId = null;
let initialised = false;
setTimeout(() => (initialised = true), 1000); // stands for expensive initialisation

function json(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
}

const effects = {
  ready: () => (initialised ? 200 : 503),
  validate: () =>
    new Promise((resolve) => {
      http.get("http://127.0.0.1:8080/hooks", (res) => resolve(res.statusCode === 200 ? 200 : 500)).on("error", () => resolve(503));
    }),
  run: (text) => {
    instanceId = randomUUID();
    // The body is JSON: {"microvmId": "...", "runHookPayload": "<the RunMicrovm string>"}.
    const { microvmId, runHookPayload } = JSON.parse(text);
    return { status: 200, payload: runHookPayload, microvmId };
  },
  suspend: () => 200,
  resume: () => 200,
  terminate: () => 200,
};

http.createServer((req, res) => {
  if (req.url === "/hooks") return json(res, 200, { calls });
  requests += 1;
  json(res, 200, { app: "hooks", requests, instanceId, hooks: calls.map((c) => c.hook) });
}).listen(8080, "0.0.0.0");

http.createServer((req, res) => {
  let text = "";
  req.setEncoding("utf8");
  req.on("data", (c) => (text += c));
  req.on("end", async () => {
    const hook = req.method === "POST" && req.url.startsWith(HOOKS) ? req.url.slice(HOOKS.length) : "";
    const effect = effects[hook];
    if (!effect) return json(res, 404, { message: `no hook at ${req.method} ${req.url}` });
    const result = await effect(text);
    const { status, ...details } = typeof result === "number" ? { status: result } : result;
    if (status === 200) calls.push({ hook, at: new Date().toISOString(), ...details });
    console.log(`hook ${hook}: ${status}${Object.keys(details).length ? ` ${JSON.stringify(details)}` : ""}`);
    json(res, status, { hook, status });
  });
}).listen(9000, "0.0.0.0");

console.log("hooks example listening on 8080 (app) and 9000 (hooks)");
