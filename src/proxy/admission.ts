// Who may pass: every request and WebSocket upgrade shows a token signed by
// this server, bound to the MicroVM it asks for, unexpired and admitting the
// port. Then the MicroVM must exist (a TERMINATED MicroVM's tokens stop
// working at once) and be RUNNING, or be made so: a SUSPENDED MicroVM with
// autoResumeEnabled is resumed while the request waits. All of it is checked
// against memory: the key and the core's live copy of each MicroVM.

import type { IncomingHttpHeaders } from "node:http";
import type { Microvm, TokenKind } from "../core/index.js";
import { portAllowed, type MicrovmTokens } from "./tokens.js";
import { microvmFromHost, portOf, tokenOf, AUTH_HEADER } from "./routing.js";

/** What the proxy needs of the core. */
export interface MicrovmDirectory {
  peek(id: string): Microvm | undefined;
  /** Resumes a SUSPENDED MicroVM; resolves once it is RUNNING. */
  resume(id: string): Promise<void>;
  /** Inbound traffic: the MicroVM's idle clock starts again. */
  activity(id: string): void;
  /** The RUNNING MicroVM's address on this host. */
  address(id: string): string | undefined;
}

export class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface Admitted {
  microvmId: string;
  port: number;
  kind: TokenKind;
}

/** Checks the request's token against the MicroVM and port it asks for; throws a Refusal (403) when it fails. */
export async function admit(tokens: MicrovmTokens, headers: IncomingHttpHeaders, domain: string): Promise<Admitted> {
  const token = tokenOf(headers);
  if (!token) throw new Refusal(403, `Missing token: send the ${AUTH_HEADER} header from create-microvm-auth-token.`);
  let claims;
  try {
    claims = await tokens.verify(token);
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new Refusal(403, code === "ERR_JWT_EXPIRED" ? "Token expired: create a new one with create-microvm-auth-token." : "Invalid token: it was not issued by this lmvm server.");
  }
  const named = microvmFromHost(headers[":authority"] as string | undefined ?? headers.host, domain);
  if (named && named !== claims.microvmId) throw new Refusal(403, `Token is for MicroVM ${claims.microvmId}, not ${named}.`);
  const port = portOf(headers);
  if (typeof port === "string") throw new Refusal(400, port);
  if (claims.kind === "endpoint" && !portAllowed(claims.allowedPorts, port)) throw new Refusal(403, `Token does not allow port ${port}.`);
  return { microvmId: claims.microvmId, port, kind: claims.kind };
}

const PENDING_WAIT_MS = 60_000;

/**
 * The address of the MicroVM, RUNNING: waits out a start or a suspend under
 * way, and resumes a SUSPENDED one when its idlePolicy allows auto-resume.
 */
export async function reach(directory: MicrovmDirectory, id: string): Promise<string> {
  const deadline = Date.now() + PENDING_WAIT_MS;
  for (;;) {
    const vm = directory.peek(id);
    if (!vm || vm.state === "TERMINATING" || vm.state === "TERMINATED") throw new Refusal(403, `MicroVM ${id} is terminated; its tokens no longer work.`);
    if (vm.state === "RUNNING") {
      const address = directory.address(id);
      if (address) return address;
    } else if (vm.state === "SUSPENDED") {
      if (!vm.config.idlePolicy?.autoResumeEnabled) throw new Refusal(409, `MicroVM ${id} is SUSPENDED and auto-resume is off: resume it with resume-microvm.`);
      await directory.resume(id).catch((err: Error) => {
        throw new Refusal(503, `MicroVM ${id} could not be resumed: ${err.message}`);
      });
      continue;
    }
    if (Date.now() > deadline) throw new Refusal(503, `MicroVM ${id} is still ${vm.state}; retry later.`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
