// A tiny app for the quick start: it initialises once (the part a snapshot
// saves), answers on 8080, and implements the lifecycle hooks on 9000.
const http = require("node:http");

let ready = false;
let requests = 0;
const startedAt = Date.now();
setTimeout(() => (ready = true), 500); // stands for expensive initialisation

http.createServer((req, res) => {
  requests += 1;
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ hello: "world", requests, uptimeMs: Date.now() - startedAt }));
}).listen(8080, "0.0.0.0");

http.createServer((req, res) => {
  if (req.url.endsWith("/ready") || req.url.endsWith("/validate")) {
    res.writeHead(ready ? 200 : 503).end();
    return;
  }
  res.writeHead(200).end();
}).listen(9000, "0.0.0.0");
