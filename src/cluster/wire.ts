// The agent RPC's wire format, shared by the agent (agent.ts) and the
// server's remote runtime (remote-runtime.ts). Every call is
// `POST /v1/<op>` over HTTPS with mutual TLS, a JSON body in and out; a
// failure answers 500 with { error: { name, message } }, its name one of the
// runtime port's errors (NotBegun, RunHookFailed, RuntimeUnavailable) or
// LeaseLost (the agent's fencing refused the call), so the server rethrows
// what the agent's runtime threw. The endpoint's traffic goes through
// `CONNECT <microvm-id>:<port>` with the lease's epoch in `lmvm-epoch`.

import { request, type Agent as HttpsAgent } from "node:https";
import type { TLSSocket } from "node:tls";
import { BuildFailure, NotBegun, RunHookFailed, RuntimeUnavailable, type BuildJob, type ImageVersion, type Microvm } from "../core/index.js";

export const RPC_PREFIX = "/v1/";
export const EPOCH_HEADER = "lmvm-epoch";

/** The agent's fencing refused a call: the MicroVM's lease is not (this host, that epoch). */
export class LeaseLost extends Error {
  override name = "LeaseLost";
}

/** Top-level times of a MicroVM or version, turned back into Dates after JSON. */
const TIMES = ["createdAt", "updatedAt", "startedAt", "terminatedAt"] as const;

function revive<T extends object>(o: T): T {
  const r = o as Record<string, unknown>;
  for (const k of TIMES) if (typeof r[k] === "string") r[k] = new Date(r[k] as string);
  return o;
}

export const reviveMicrovm = (vm: Microvm): Microvm => revive(vm);
export const reviveVersion = (v: ImageVersion): ImageVersion => revive(v);
export const reviveJob = (j: BuildJob): BuildJob => ({ ...j, image: revive(j.image), version: revive(j.version), build: revive(j.build) });

export interface WireError {
  name: string;
  message: string;
}

export function errorToWire(err: unknown): WireError {
  const e = err instanceof Error ? err : new Error(String(err));
  const name = e instanceof BuildFailure ? "BuildFailure" : e instanceof NotBegun ? "NotBegun" : e instanceof RunHookFailed ? "RunHookFailed" : e instanceof RuntimeUnavailable ? "RuntimeUnavailable" : e instanceof LeaseLost ? "LeaseLost" : "Error";
  return { name, message: e.message };
}

export function errorFromWire(w: WireError, host: string): Error {
  switch (w.name) {
    case "BuildFailure": return new BuildFailure(w.message);
    case "NotBegun": return new NotBegun(w.message);
    case "RunHookFailed": return new RunHookFailed(w.message);
    case "RuntimeUnavailable": return new RuntimeUnavailable(`host ${host}: ${w.message}`);
    case "LeaseLost": return new LeaseLost(w.message);
    default: return new Error(`host ${host}: ${w.message}`);
  }
}

/** A call that never reached its agent (no connection, TLS refused, no connection in time): nothing of it began there. */
export class Unreached extends Error {}

export function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i).replace(/^\[(.*)\]$/, "$1"), Number(address.slice(i + 1))];
}

/**
 * Calls `op` on the agent at `address` (its JSON answer, or its error rethrown as the error it
 * names); Unreached when the call never reached it.
 */
export function agentCall<T>(agent: HttpsAgent, address: string, op: string, body: unknown, timeoutMs: number): Promise<T> {
  const [host, port] = splitAddress(address);
  const text = JSON.stringify(body);
  return new Promise<T>((resolve, reject) => {
    const req = request({ host, port, method: "POST", path: `${RPC_PREFIX}${op}`, agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(text) }, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        let parsed: { result?: T; error?: WireError };
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof parsed;
        } catch {
          return reject(new Error(`host at ${address} answered ${op} with status ${res.statusCode} and no JSON`));
        }
        if (res.statusCode === 200) resolve(parsed.result as T);
        else reject(errorFromWire(parsed.error ?? { name: "Error", message: `status ${res.statusCode}` }, address));
      });
    });
    const delivered = deliveredFlag(req);
    req.on("timeout", () => req.destroy(delivered()
      ? new Error(`host at ${address} did not answer ${op} within ${timeoutMs / 1000} s`)
      : new Unreached(`cannot reach host at ${address} for ${op}: no connection within ${timeoutMs / 1000} s`)));
    req.on("error", (err) => {
      if (err instanceof Unreached || err.message.startsWith("host at")) return reject(err);
      reject(delivered() ? new Error(`lost host at ${address} during ${op}: ${err.message}`) : new Unreached(`cannot reach host at ${address} for ${op}: ${err.message}`));
    });
    req.end(text);
  });
}

/** Whether a request has been delivered: it has a connection, a kept-alive one at once, a new one at its TLS handshake's end. */
export function deliveredFlag(req: import("node:http").ClientRequest): () => boolean {
  let delivered = false;
  req.on("socket", (socket) => {
    if (!(socket as TLSSocket).connecting && !(socket as TLSSocket).pending) delivered = true;
    else socket.once("secureConnect", () => (delivered = true));
  });
  return () => delivered;
}
