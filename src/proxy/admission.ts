// Who may pass: every request and WebSocket upgrade shows a token signed by
// this server, bound to the MicroVM it asks for, unexpired and admitting the
// port. Then the MicroVM must exist (a TERMINATED MicroVM's tokens stop
// working at once), admit the traffic by its ingress network connectors, and
// be RUNNING, or be made so: a PENDING MicroVM is waited for (no traffic
// before its /run hook has answered 200), a SUSPENDED MicroVM with
// autoResumeEnabled is resumed while the request waits. All of it is checked
// against memory: the key and the core's live copy of each MicroVM.
// Status codes as https://docs.aws.amazon.com/lambda/latest/dg/microvms-networking.html
// lists them: 400 malformed port or subprotocol, 403 token or port refused,
// 429 rate limits, 502 the app or the MicroVM cannot answer.

import type { Duplex } from "node:stream";
import type { IncomingHttpHeaders } from "node:http";
import { HOOK_PATH_PREFIX, HOOK_RELAY_PORT, UNNAMED_HOOKS_PORT } from "../core/app-contract.js";
import { ingressRefusal, type ImageConfig, type Microvm, type TokenKind } from "../core/index.js";
import { portAllowed, type MicrovmTokens } from "./tokens.js";
import { microvmFromHost, platformSubprotocols, portOf, reachesHookPath, tokenOf, AUTH_HEADER, type OfferedSubprotocols } from "./routing.js";

/** What the proxy needs of the core. */
export interface MicrovmDirectory {
  peek(id: string): Microvm | undefined;
  /** The configuration of the image version a MicroVM runs (its size, its hooks port). */
  imageConfig(vm: Microvm): Promise<Pick<ImageConfig, "resources" | "hooks">>;
  /** Resumes a SUSPENDED MicroVM; resolves once it is RUNNING. */
  resume(id: string): Promise<void>;
  /** Inbound traffic: the MicroVM's idle clock starts again. */
  activity(id: string): void;
  /** The RUNNING MicroVM's address on this host (in cluster mode: that it is placed, on which host). */
  address(id: string): string | undefined;
  /** A connection to a port of the MicroVM's app (the runtime's `connect`): the proxy always dials through it. */
  connect(id: string, port: number): Duplex;
}

export class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Extra response headers (Retry-After on a 429). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The body of a 403 for a port the token does not admit, as the service words it. */
export const PORT_DENIED = "Access to port denied";

export interface Admitted {
  microvmId: string;
  port: number;
  kind: TokenKind;
  /** The WebSocket's subprotocols, split into lmvm's and the app's (upgrades only). */
  offered?: OfferedSubprotocols;
}

/**
 * Checks the request's token against the MicroVM and port it asks for; throws
 * a Refusal: 400 for a malformed port or subprotocol, 403 for a token or port
 * it does not admit.
 */
export async function admit(tokens: MicrovmTokens, headers: IncomingHttpHeaders, domain: string, websocket = false): Promise<Admitted> {
  let offered: OfferedSubprotocols | undefined;
  if (websocket) {
    try {
      offered = platformSubprotocols(headers);
    } catch (err) {
      throw new Refusal(400, (err as Error).message);
    }
  }
  const port = portOf(headers, offered);
  if (typeof port === "string") throw new Refusal(400, port);
  const token = tokenOf(headers, offered);
  if (!token) throw new Refusal(403, `Missing token: send the ${AUTH_HEADER} header from create-microvm-auth-token${websocket ? " (a WebSocket may offer the subprotocols lambda-microvms and lambda-microvms.authentication.<token> instead)" : ""}.`);
  let claims;
  try {
    claims = await tokens.verify(token);
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new Refusal(403, code === "ERR_JWT_EXPIRED" ? "Token expired: create a new one with create-microvm-auth-token." : "Invalid token: it was not issued by this lmvm server.");
  }
  const named = microvmFromHost(headers[":authority"] as string | undefined ?? headers.host, domain);
  if (named && named !== claims.microvmId) throw new Refusal(403, `Token is for MicroVM ${claims.microvmId}, not ${named}.`);
  if (claims.kind === "endpoint") {
    // lmvm's in-sandbox hook relay: only the platform calls it, whatever the token says.
    if (port === HOOK_RELAY_PORT) throw new Refusal(403, PORT_DENIED);
    if (!portAllowed(claims.allowedPorts, port)) throw new Refusal(403, PORT_DENIED);
  }
  return { microvmId: claims.microvmId, port, kind: claims.kind, ...(offered ? { offered } : {}) };
}

/**
 * Whether the MicroVM's ingress connectors admit this traffic, by the core's
 * rules (ingressRefusal, the same that refuse minting tokens): NO_INGRESS
 * admits nothing; app traffic needs HTTP_INGRESS or ALL_INGRESS; a shell
 * needs SHELL_INGRESS (ALL_INGRESS does not open the shell, as on AWS).
 */
export function checkIngress(vm: Microvm, kind: TokenKind): void {
  const refused = ingressRefusal(vm.config.ingressNetworkConnectors, kind);
  if (refused) throw new Refusal(403, `MicroVM ${vm.id}: ${refused}`);
}

/**
 * Lifecycle hooks are the platform's to call: the endpoint never forwards a
 * request for them to the hooks port (the image's hooks.port, else the app's
 * port 8080, where lmvm's runtime calls them when the image names none).
 */
export function checkHookPath(config: Pick<ImageConfig, "hooks">, port: number, path: string): void {
  const hooksPort = config.hooks?.port ?? UNNAMED_HOOKS_PORT;
  if (port === hooksPort && reachesHookPath(path, HOOK_PATH_PREFIX)) {
    throw new Refusal(403, `Access to the lifecycle hook path denied: ${HOOK_PATH_PREFIX}* on the hooks port is called by the platform only.`);
  }
}

/**
 * The address of the MicroVM, RUNNING: waits out a start (the endpoint
 * forwards nothing before /run has answered) or a suspend under way, and
 * resumes a SUSPENDED one when its idlePolicy allows auto-resume. Waits at
 * most `waitMs`; a start or resume that fails, or a wait that runs out, is a 502.
 */
export async function reach(directory: MicrovmDirectory, id: string, waitMs: number): Promise<string> {
  const deadline = Date.now() + waitMs;
  let waited: string | undefined;
  for (;;) {
    const vm = directory.peek(id);
    if (!vm || vm.state === "TERMINATING" || vm.state === "TERMINATED") {
      if (waited) throw new Refusal(502, `MicroVM ${id} did not become RUNNING (it was ${waited}): ${vm?.stateReason ?? "it was terminated"}.`);
      throw new Refusal(403, `MicroVM ${id} is terminated; its tokens no longer work.`);
    }
    if (vm.state === "RUNNING") {
      const address = directory.address(id);
      if (address) return address;
    } else if (vm.state === "SUSPENDED") {
      if (!vm.config.idlePolicy?.autoResumeEnabled) throw new Refusal(502, `MicroVM ${id} is SUSPENDED and its idlePolicy has autoResumeEnabled off: resume it with resume-microvm.`);
      waited = "SUSPENDED";
      await directory.resume(id).catch((err: Error) => {
        throw new Refusal(502, `MicroVM ${id} could not be resumed: ${err.message}`);
      });
      continue;
    } else {
      waited = vm.state;
    }
    if (Date.now() > deadline) throw new Refusal(502, `MicroVM ${id} is still ${vm.state} after ${Math.round(waitMs / 1000)} s; retry later.`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
