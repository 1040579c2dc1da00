// POST / carries several AWS protocols on one port: CloudWatch Logs and
// CloudTrail (awsJson1_1, told apart by X-Amz-Target), IAM and STS (awsQuery:
// a form body whose Action and Version name the operation). One route takes
// POST / and hands each request to the first API that claims it.

import type { FastifyReply, FastifyRequest } from "fastify";

export interface PostRootApi {
  /** For error messages: "CloudWatch Logs", "IAM"… */
  name: string;
  /** Whether the request is meant for this API (from its headers and raw body). */
  claims(req: FastifyRequest, body: Buffer): boolean;
  handle(req: FastifyRequest, reply: FastifyReply, body: Buffer): Promise<unknown>;
}
