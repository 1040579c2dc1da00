// The STS API on the control API's port: POST / with a form body
// `Action=<Operation>&Version=2011-06-15`, SigV4-signed for `sts`, answered in
// STS's XML, so @aws-sdk/client-sts works against lmvm
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_Operations.html).
// GetCallerIdentity needs no permission, as on AWS
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html).
// AssumeRole is decided by the core (IamAdministration.assumeRole): the role's
// trust policy and, where AWS asks for it, the caller's own sts:AssumeRole
// permission.

import type { FastifyRequest } from "fastify";
import type { Caller, IamAdministration, Scope } from "../core/index.js";
import type { PostRootApi } from "./post-root.js";
import { integer, queryApi, required, type QueryOperation } from "./query-protocol.js";
import { recordOf } from "./request-record.js";

export const STS_VERSION = "2011-06-15";
export const STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/";

export interface StsApiOptions {
  admin: IamAdministration;
  scope: Scope;
  /** Checks the SigV4 signature for the signing name `sts` and says who sent the request. */
  authenticate: (req: FastifyRequest, body: Buffer) => Promise<Caller>;
  log: (event: Record<string, unknown>) => void;
}

/** The parameters lmvm takes (AssumeRole's, less managed policy ARNs, MFA, source identity and transitive tags, which lmvm does not have). */
const MEMBERS: Record<string, string[]> = {
  GetCallerIdentity: [],
  AssumeRole: ["RoleArn", "RoleSessionName", "DurationSeconds", "Policy", "ExternalId", "Tags"],
};

export function stsApi(opts: StsApiOptions): PostRootApi {
  const operations: Record<string, QueryOperation> = {
    GetCallerIdentity: async (_q, caller) => ({ UserId: caller.userId, Account: caller.accountId, Arn: caller.arn }),
    AssumeRole: async (q, caller, req) => {
      const roleArn = required(q, "RoleArn");
      const roleSessionName = required(q, "RoleSessionName");
      const durationSeconds = integer(q, "DurationSeconds", 900, 43200);
      const policy = q.string("Policy");
      const externalId = q.string("ExternalId");
      const tags = q.tags();
      recordOf(req).resources = [roleArn];
      const assumed = await opts.admin.assumeRole(caller, {
        roleArn, roleSessionName,
        ...(durationSeconds !== undefined ? { durationSeconds } : {}),
        ...(policy !== undefined ? { policy } : {}),
        ...(externalId !== undefined ? { externalId } : {}),
        ...(tags ? { tags } : {}),
      });
      const c = assumed.credentials;
      // The secret and the session token go to the caller only.
      recordOf(req).responseElements = {
        credentials: { accessKeyId: c.accessKeyId, expiration: c.expiration.toISOString() },
        assumedRoleUser: { arn: assumed.assumedRoleUser.arn, assumedRoleId: assumed.assumedRoleUser.assumedRoleId },
      };
      return {
        Credentials: { AccessKeyId: c.accessKeyId, SecretAccessKey: c.secretAccessKey, SessionToken: c.sessionToken, Expiration: c.expiration },
        AssumedRoleUser: { AssumedRoleId: assumed.assumedRoleUser.assumedRoleId, Arn: assumed.assumedRoleUser.arn },
      };
    },
  };
  return queryApi({
    name: "STS",
    version: STS_VERSION,
    namespace: STS_NAMESPACE,
    eventSource: "sts.amazonaws.com",
    internalCode: "InternalFailure",
    operations,
    members: MEMBERS,
    readOnly: (action) => action === "GetCallerIdentity",
    authenticate: opts.authenticate,
    log: opts.log,
  });
}
