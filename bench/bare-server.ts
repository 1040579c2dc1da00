// Baselines answering fixed JSON bodies by path, with no signature check and
// no store: `node` is a bare node:http server; `fastify` is the same routes in
// Fastify, the framework lmvm's API uses, to show the framework's own ceiling.
import { createServer } from "node:http";
import Fastify from "fastify";

const [mode, json] = process.argv.slice(2);
const bodies = new Map<string, string>(Object.entries(JSON.parse(json ?? "{}")));
const announce = (port: number) => process.stdout.write(`${port}\n`);

if (mode === "fastify") {
  const app = Fastify();
  for (const [url, body] of bodies) {
    app.get(url.split("?")[0]!, async (_req, reply) => reply.header("content-type", "application/json").send(body));
  }
  await app.listen({ host: "127.0.0.1", port: 0 });
  const a = app.server.address();
  announce(typeof a === "object" && a ? a.port : 0);
} else {
  const server = createServer((req, res) => {
    const body = bodies.get(req.url ?? "");
    res.writeHead(body ? 200 : 404, { "content-type": "application/json" });
    res.end(body ?? "{}");
  });
  server.listen(0, "127.0.0.1", () => {
    const a = server.address();
    announce(typeof a === "object" && a ? a.port : 0);
  });
}
