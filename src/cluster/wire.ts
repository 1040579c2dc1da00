// The agent RPC's wire format, shared by the agent (agent.ts) and the
// server's remote runtime (remote-runtime.ts). Every call is
// `POST /v1/<op>` over HTTPS with mutual TLS, a JSON body in and out; a
// failure answers 500 with { error: { name, message } }, its name one of the
// runtime port's errors (NotBegun, RunHookFailed, RuntimeUnavailable) or
// LeaseLost (the agent's fencing refused the call), so the server rethrows
// what the agent's runtime threw. The endpoint's traffic goes through
// `CONNECT <microvm-id>:<port>` with the lease's epoch in `lmvm-epoch`.

import { NotBegun, RunHookFailed, RuntimeUnavailable, type ImageVersion, type Microvm } from "../core/index.js";

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

export interface WireError {
  name: string;
  message: string;
}

export function errorToWire(err: unknown): WireError {
  const e = err instanceof Error ? err : new Error(String(err));
  const name = e instanceof NotBegun ? "NotBegun" : e instanceof RunHookFailed ? "RunHookFailed" : e instanceof RuntimeUnavailable ? "RuntimeUnavailable" : e instanceof LeaseLost ? "LeaseLost" : "Error";
  return { name, message: e.message };
}

export function errorFromWire(w: WireError, host: string): Error {
  switch (w.name) {
    case "NotBegun": return new NotBegun(w.message);
    case "RunHookFailed": return new RunHookFailed(w.message);
    case "RuntimeUnavailable": return new RuntimeUnavailable(`host ${host}: ${w.message}`);
    case "LeaseLost": return new LeaseLost(w.message);
    default: return new Error(`host ${host}: ${w.message}`);
  }
}
