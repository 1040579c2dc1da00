// Calls an app's lifecycle hooks: POST http://<sandbox>:<port>/aws/lambda-microvms/runtime/v1/<hook>.
// /ready and /validate may answer 503 ("not yet"): they are polled until their
// timeout. Every call uses its own connection, which the client ends with a
// reset once the answer is in: gVisor refuses to checkpoint while any TCP
// endpoint in the sandbox is connected or closing, TIME_WAIT included. A FIN
// from our side still left the sandbox's end in TIME_WAIT now and then (a
// simultaneous close under load); after a RST nothing is left to wait for.
// MicroVM hooks carry the MicroVM's id in a header.

import { Agent, request } from "node:http";

export type HookName = "ready" | "validate" | "run" | "resume" | "suspend" | "terminate";

/** Names the MicroVM on /run, /suspend, /resume and /terminate, for apps that need their own identity. */
export const MICROVM_ID_HEADER = "x-lmvm-microvm-id";

export class HookFailure extends Error {}

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function callOnce(host: string, port: number, hook: HookName, body: string, timeoutMs: number, microvmId?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host, port, method: "POST", path: `/aws/lambda-microvms/runtime/v1/${hook}`, agent, timeout: timeoutMs, headers: { "content-type": "application/octet-stream", "content-length": Buffer.byteLength(body), ...(microvmId ? { [MICROVM_ID_HEADER]: microvmId } : {}) } },
      (res) => {
        const socket = res.socket;
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c.length + text.length > 4096 ? "" : c));
        res.on("end", () => {
          socket.resetAndDestroy(); // RST: the sandbox keeps no closing endpoint (see above)
          resolve({ status: res.statusCode ?? 0, body: text });
        });
      },
    );
    req.on("timeout", () => req.destroy(new HookFailure(`/${hook} did not answer within ${Math.round(timeoutMs / 1000)} s`)));
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * Calls `hook` and resolves when it answers 200. With `poll`, connection
 * errors and 503 mean "not yet" until `timeoutSeconds` have passed.
 */
export async function callHook(host: string, port: number, hook: HookName, opts: { body?: string; timeoutSeconds: number; poll?: boolean; microvmId?: string }): Promise<void> {
  const deadline = Date.now() + opts.timeoutSeconds * 1000;
  let last = "no answer";
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw new HookFailure(`/${hook} hook on port ${port} did not answer 200 within ${opts.timeoutSeconds} s (last: ${last})`);
    try {
      const res = await callOnce(host, port, hook, opts.body ?? "", left, opts.microvmId);
      if (res.status === 200) return;
      last = `HTTP ${res.status}${res.body ? `: ${res.body.slice(0, 200)}` : ""}`;
      if (!(opts.poll && res.status === 503)) throw new HookFailure(`/${hook} hook answered ${last}`);
    } catch (err) {
      if (err instanceof HookFailure && !/did not answer within/.test(err.message)) throw err;
      last = (err as Error).message;
      if (!opts.poll) throw new HookFailure(`/${hook} hook on port ${port} failed: ${last}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
