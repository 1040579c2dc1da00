// Calls an app's lifecycle hooks: POST /aws/lambda-microvms/runtime/v1/<hook>
// on the image's hooks port, as AWS Lambda MicroVMs does. The call goes to the
// sandbox's HOOK_RELAY_PORT, where lmvm-init (guest-init/) relays it to
// 127.0.0.1:<hooks port>: the app sees it come from 127.0.0.1, with
// `Host: localhost:<hooks port>`, as observed on AWS.
//
// What each hook carries: /run a JSON body {"microvmId", "runHookPayload"}
// (the payload is the RunMicrovm string as is, "" when none was given);
// the others no body. /run, /resume, /suspend and /terminate also name the
// MicroVM in an x-lmvm-microvm-id header (an lmvm addition); /ready and
// /validate run at build time, before any MicroVM exists, and carry none.
// /ready and /validate may answer 503 ("not yet"): they are polled until their
// timeout. Every call uses its own connection, which the client ends with a
// reset once the answer is in: gVisor refuses to checkpoint while any TCP
// endpoint in the sandbox is connected or closing, TIME_WAIT included. A FIN
// from our side still left the sandbox's end in TIME_WAIT now and then (a
// simultaneous close under load); after a RST nothing is left to wait for.
//
// Every call ends by its deadline, whatever the server does. The answer is its
// status line; its body is read for at most BODY_WAIT_MS. The old client waited
// for the body's end under a socket idle timeout only, so a hook that answered
// and kept sending (a 503 whose body never ends) held a build at /ready for
// ever. HTTP/1.0 servers (Python's http.server) end a body by closing first;
// Node has then already sent its own FIN, and a reset fails (EINVAL), so the
// socket is only freed. Calls share no connection pool: a request queued in a
// pool has no socket, so no socket timeout either.

import { request } from "node:http";
import { HOOK_PATH_PREFIX, HOOK_RELAY_PORT } from "../core/index.js";

export type HookName = "ready" | "validate" | "run" | "resume" | "suspend" | "terminate";

/** Names the MicroVM on /run, /suspend, /resume and /terminate (an lmvm addition; AWS documents no hook headers). */
export const MICROVM_ID_HEADER = "x-lmvm-microvm-id";

/** The hook did not answer 200: `status` is what it answered instead; `timedOut` when it did not answer in time. */
export class HookFailure extends Error {
  constructor(
    message: string,
    readonly answer: { status?: number; timedOut?: boolean } = {},
  ) {
    super(message);
  }
}

/** The call was cut short by its caller's signal. */
export class HookAborted extends Error {}

/** What is kept of an answer's body, for error messages. */
const MAX_BODY = 4096;
/** How long an answer's body is waited for once its status line is in. */
const BODY_WAIT_MS = 2000;

/** The body of the /run hook: the MicroVM's id and the RunMicrovm runHookPayload, a string ("" when none was given). */
export function runHookBody(microvmId: string, runHookPayload: string | undefined): string {
  return JSON.stringify({ microvmId, runHookPayload: runHookPayload ?? "" });
}

function callOnce(host: string, port: number, hook: HookName, body: string, timeoutMs: number, microvmId: string | undefined, signal: AbortSignal | undefined): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let answered = false;
    const finish = (err: Error | undefined, value?: { status: number; body: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      // RST, never FIN: the sandbox keeps no closing endpoint (see above). When the server
      // closed first (HTTP/1.0), Node has already answered its FIN and a reset fails (EINVAL).
      const socket = req.socket;
      if (socket && !socket.destroyed && !socket.writableEnded) socket.resetAndDestroy();
      req.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    // Keep-alive asks the server not to close first; the client resets the connection when done.
    const req = request(
      {
        host,
        port: HOOK_RELAY_PORT,
        method: "POST",
        path: `${HOOK_PATH_PREFIX}${hook}`,
        agent: false,
        headers: {
          host: `localhost:${port}`,
          connection: "keep-alive",
          ...(body ? { "content-type": "application/json" } : {}),
          "content-length": Buffer.byteLength(body),
          ...(microvmId ? { [MICROVM_ID_HEADER]: microvmId } : {}),
        },
      },
      (res) => {
        answered = true;
        let text = "";
        // The status is the answer; the body (quoted when the status is not 200) is read
        // to its end, but not past BODY_WAIT_MS: an HTTP/1.1 server that sends neither
        // content-length nor a close, or one that trickles, would keep us to the deadline.
        const bodyTimer = setTimeout(() => finish(undefined, { status: res.statusCode ?? 0, body: text }), Math.min(BODY_WAIT_MS, timeoutMs));
        res.once("close", () => clearTimeout(bodyTimer));
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text = text.length >= MAX_BODY ? text : (text + c).slice(0, MAX_BODY)));
        res.on("end", () => finish(undefined, { status: res.statusCode ?? 0, body: text }));
        res.on("error", () => finish(undefined, { status: res.statusCode ?? 0, body: text }));
        res.on("close", () => finish(undefined, { status: res.statusCode ?? 0, body: text }));
      },
    );
    const timer = setTimeout(() => finish(new HookFailure(`/${hook} did not answer within ${Math.round(timeoutMs / 1000)} s`, { timedOut: true })), timeoutMs);
    const onAbort = () => finish(new HookAborted(`/${hook} was cancelled`));
    // The listener comes first: destroying a request that has no 'error' listener throws.
    req.on("error", (err) => finish(err));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    // With an answer begun, its own events decide (the request closes before an HTTP/1.0 answer's 'end').
    req.on("close", () => answered || finish(new Error("the connection closed before an answer")));
    req.end(body);
  });
}

/**
 * Calls `hook` and resolves when it answers 200. With `poll`, connection
 * errors and 503 mean "not yet" until `timeoutSeconds` have passed. Ends by
 * then in every case, and at once when `signal` aborts (with HookAborted).
 */
export async function callHook(host: string, port: number, hook: HookName, opts: { body?: string; timeoutSeconds: number; poll?: boolean; microvmId?: string; signal?: AbortSignal }): Promise<void> {
  const deadline = Date.now() + opts.timeoutSeconds * 1000;
  let last = "no answer";
  for (;;) {
    if (opts.signal?.aborted) throw new HookAborted(`/${hook} was cancelled`);
    const left = deadline - Date.now();
    if (left <= 0) throw new HookFailure(`/${hook} hook on port ${port} did not answer 200 within ${opts.timeoutSeconds} s (last: ${last})`, { timedOut: true });
    try {
      const res = await callOnce(host, port, hook, opts.body ?? "", left, opts.microvmId, opts.signal);
      if (res.status === 200) return;
      last = `HTTP ${res.status}${res.body ? `: ${res.body.slice(0, 200)}` : ""}`;
      if (!(opts.poll && res.status === 503)) throw new HookFailure(`/${hook} hook answered ${last}`, { status: res.status });
    } catch (err) {
      if (err instanceof HookAborted) throw err;
      const timedOut = err instanceof HookFailure && /did not answer within/.test(err.message);
      if (err instanceof HookFailure && !timedOut) throw err;
      // The deadline cuts the last call short: what the hook last answered says more.
      if (!(timedOut && last.startsWith("HTTP "))) last = (err as Error).message;
      if (!opts.poll) throw new HookFailure(`/${hook} hook on port ${port} failed: ${last}`, timedOut ? { timedOut } : {});
    }
    await pause(Math.min(100, Math.max(0, deadline - Date.now())), opts.signal);
  }
}

/** Waits `ms`, or less when `signal` aborts; never rejects. */
export function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
