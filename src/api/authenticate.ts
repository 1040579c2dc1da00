// One way every API on the port checks a request's signature: the raw path,
// query and body go to the SigV4 verifier with the peer's address
// (aws:SourceIp); the request's audit record learns the access key at once
// (even when the request is refused) and the caller once the signature checks
// out. The Lambda MicroVMs routes, Lambda Core's connector routes, CloudWatch
// Logs, IAM, STS and CloudTrail all call it.

import type { FastifyRequest } from "fastify";
import type { Caller } from "../core/index.js";
import { recordOf } from "./request-record.js";
import { accessKeyIdOf, type SigV4Verifier } from "./sigv4.js";

export interface Authenticated {
  caller: Caller;
  accessKeyId: string;
  /** The query string as sent, without '?'. */
  rawQuery: string;
}

function splitUrl(url: string): { rawPath: string; rawQuery: string } {
  const q = url.indexOf("?");
  return q < 0 ? { rawPath: url, rawQuery: "" } : { rawPath: url.slice(0, q), rawQuery: url.slice(q + 1) };
}

/** Checks the request's signature; throws AwsError (signature faults) or Unauthenticated (the key or token). */
export async function authenticateRequest(verifier: SigV4Verifier, req: FastifyRequest, body: Buffer | { declaredSha256: string }): Promise<Authenticated> {
  const { rawPath, rawQuery } = splitUrl(req.raw.url ?? "/");
  const record = recordOf(req);
  const named = accessKeyIdOf(req.headers);
  if (named) record.accessKeyId = named;
  const { caller, accessKeyId } = await verifier.verify({ method: req.method, rawPath, rawQuery, headers: req.headers, body, sourceIp: req.socket.remoteAddress });
  record.caller = caller;
  return { caller, accessKeyId, rawQuery };
}
