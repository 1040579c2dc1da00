// The IAM API on the control API's port: POST / with a form body
// `Action=<Operation>&Version=2010-05-08`, SigV4-signed for `iam`, answered in
// IAM's XML, so @aws-sdk/client-iam and the AWS CLI's `aws iam` work against
// lmvm (https://docs.aws.amazon.com/IAM/latest/APIReference/API_Operations.html).
// Each operation is authorised as iam:<Operation> on the user's or role's ARN
// ("*" for ListUsers and ListRoles); the core (IamAdministration) then applies
// IAM's own rules. Policy documents come back URL-encoded, as IAM sends them.

import type { FastifyRequest } from "fastify";
import {
  IamFault, requestTagContext, ResourceNames,
  type AuthorizationRequest, type Caller, type ConditionContext, type IamAccessKey, type IamAdministration, type IamRole, type IamUser, type Identities, type Scope,
} from "../core/index.js";
import type { PostRootApi } from "./post-root.js";
import { integer, queryApi, QueryError, required, type QueryOperation, type QueryRequest } from "./query-protocol.js";
import { recordOf } from "./request-record.js";

export const IAM_VERSION = "2010-05-08";
export const IAM_NAMESPACE = "https://iam.amazonaws.com/doc/2010-05-08/";

export interface IamApiOptions {
  admin: IamAdministration;
  identities: Identities;
  scope: Scope;
  /** Checks the SigV4 signature for the signing name `iam` and says who sent the request. */
  authenticate: (req: FastifyRequest, body: Buffer) => Promise<Caller>;
  /** When the account's root key was made: GetUser's CreateDate for root. */
  rootCreated: Date;
  log: (event: Record<string, unknown>) => void;
}

/** IAM returns policy documents URL-encoded (RFC 3986), and the SDKs hand them over still encoded. */
export function encodePolicy(document: string): string {
  return encodeURIComponent(document).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

const tagList = (tags: Record<string, string>) => Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));

function userXml(u: IamUser): Record<string, unknown> {
  return { Path: u.path, UserName: u.userName, UserId: u.userId, Arn: u.arn, CreateDate: u.createDate, ...(Object.keys(u.tags).length ? { Tags: tagList(u.tags) } : {}) };
}

function roleXml(r: IamRole): Record<string, unknown> {
  return {
    Path: r.path, RoleName: r.roleName, RoleId: r.roleId, Arn: r.arn, CreateDate: r.createDate,
    AssumeRolePolicyDocument: encodePolicy(r.assumeRolePolicyDocument),
    ...(r.description !== undefined ? { Description: r.description } : {}),
    MaxSessionDuration: r.maxSessionDuration,
    ...(Object.keys(r.tags).length ? { Tags: tagList(r.tags) } : {}),
  };
}

function keyXml(k: IamAccessKey): Record<string, unknown> {
  return { UserName: k.userName, AccessKeyId: k.accessKeyId, Status: k.status, CreateDate: k.createDate };
}

/**
 * One page of a list the core returns whole (policy names, access keys): at
 * most MaxItems (1–1000, default 100), after the Marker the previous page gave
 * (the last item's key, base64url).
 */
function page<T>(q: QueryRequest, items: T[], key: (item: T) => string): { items: T[]; IsTruncated: boolean; Marker?: string } {
  const max = integer(q, "MaxItems", 1, 1000) ?? 100;
  const marker = q.string("Marker");
  let start = 0;
  if (marker !== undefined) {
    const after = Buffer.from(marker, "base64url").toString("utf8");
    start = items.findIndex((i) => key(i) > after);
    if (start < 0) start = items.length;
  }
  const slice = items.slice(start, start + max);
  const truncated = start + max < items.length;
  return { items: slice, IsTruncated: truncated, ...(truncated ? { Marker: Buffer.from(key(slice.at(-1)!)).toString("base64url") } : {}) };
}

function statusOf(q: QueryRequest): "Active" | "Inactive" {
  const status = required(q, "Status");
  if (status !== "Active" && status !== "Inactive") {
    throw new QueryError("ValidationError", 400, `1 validation error detected: Value '${status}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]`);
  }
  return status;
}

const PAGE = ["Marker", "MaxItems"];
/** The parameters lmvm takes for each operation (IAM's, less managed policies and permissions boundaries, which lmvm does not have). */
const MEMBERS: Record<string, string[]> = {
  CreateUser: ["UserName", "Path", "Tags"],
  GetUser: ["UserName"],
  ListUsers: ["PathPrefix", ...PAGE],
  DeleteUser: ["UserName"],
  CreateAccessKey: ["UserName"],
  UpdateAccessKey: ["UserName", "AccessKeyId", "Status"],
  DeleteAccessKey: ["UserName", "AccessKeyId"],
  ListAccessKeys: ["UserName", ...PAGE],
  PutUserPolicy: ["UserName", "PolicyName", "PolicyDocument"],
  GetUserPolicy: ["UserName", "PolicyName"],
  DeleteUserPolicy: ["UserName", "PolicyName"],
  ListUserPolicies: ["UserName", ...PAGE],
  CreateRole: ["RoleName", "AssumeRolePolicyDocument", "Path", "Description", "MaxSessionDuration", "Tags"],
  GetRole: ["RoleName"],
  ListRoles: ["PathPrefix", ...PAGE],
  DeleteRole: ["RoleName"],
  UpdateAssumeRolePolicy: ["RoleName", "PolicyDocument"],
  PutRolePolicy: ["RoleName", "PolicyName", "PolicyDocument"],
  GetRolePolicy: ["RoleName", "PolicyName"],
  DeleteRolePolicy: ["RoleName", "PolicyName"],
  ListRolePolicies: ["RoleName", ...PAGE],
};

export function iamApi(opts: IamApiOptions): PostRootApi {
  const { admin, identities, scope } = opts;
  const names = new ResourceNames(scope);

  const authorize = async (req: FastifyRequest, caller: Caller, action: string, resource: string, context: ConditionContext = {}) => {
    const request: AuthorizationRequest = { action: `iam:${action}`, resources: [resource], context };
    recordOf(req).resources = resource === "*" ? [] : [resource];
    await identities.authorize(caller, request);
  };
  /** The user's ARN (with its path) when it exists, else what it would be at path "/". */
  const userArn = async (name: string) => {
    try {
      return (await admin.getUser(name)).arn;
    } catch (err) {
      if (err instanceof IamFault && err.code === "NoSuchEntity") return names.user("/", name);
      throw err;
    }
  };
  const roleArn = async (name: string) => {
    try {
      return (await admin.getRole(name)).arn;
    } catch (err) {
      if (err instanceof IamFault && err.code === "NoSuchEntity") return names.role("/", name);
      throw err;
    }
  };
  /** UserName, or the caller's own user when it is left out (as IAM does for access keys and GetUser). */
  const userNameOf = async (q: QueryRequest, caller: Caller): Promise<string> => {
    const given = q.string("UserName");
    if (given !== undefined) return given;
    if (caller.kind === "user") {
      const own = await admin.userOfAccessKey(caller.accessKeyId);
      if (own) return own;
    }
    if (caller.kind === "root") {
      throw new QueryError("ValidationError", 400, "The account's root has no IAM user: its one access key is in the server's data directory (credentials). Name the user with UserName.");
    }
    throw new QueryError("ValidationError", 400, "Must specify userName when calling with non-User credentials");
  };
  /** An operation on one user, authorised on that user's ARN. */
  const onUser = (action: string, run: (user: string, q: QueryRequest) => Promise<Record<string, unknown> | undefined>, implicit = false): QueryOperation =>
    async (q, caller, req) => {
      const user = implicit ? await userNameOf(q, caller) : required(q, "UserName");
      await authorize(req, caller, action, await userArn(user));
      return run(user, q);
    };
  const onRole = (action: string, run: (role: string, q: QueryRequest) => Promise<Record<string, unknown> | undefined>): QueryOperation =>
    async (q, caller, req) => {
      const role = required(q, "RoleName");
      await authorize(req, caller, action, await roleArn(role));
      return run(role, q);
    };

  const operations: Record<string, QueryOperation> = {
    CreateUser: async (q, caller, req) => {
      const userName = required(q, "UserName");
      const path = q.string("Path");
      const tags = q.tags();
      await authorize(req, caller, "CreateUser", names.user(path, userName), requestTagContext(tags));
      const user = await admin.createUser({ userName, ...(path !== undefined ? { path } : {}), ...(tags ? { tags } : {}) });
      recordOf(req).responseElements = { user: { userName: user.userName, userId: user.userId, arn: user.arn } };
      return { User: userXml(user) };
    },
    GetUser: async (q, caller, req) => {
      if (q.string("UserName") === undefined && caller.kind === "root") {
        // As IAM answers root: the account id and root ARN, no user name or path.
        return { User: { UserId: caller.accountId, Arn: caller.arn, CreateDate: opts.rootCreated } };
      }
      const name = await userNameOf(q, caller);
      await authorize(req, caller, "GetUser", await userArn(name));
      return { User: userXml(await admin.getUser(name)) };
    },
    ListUsers: async (q, caller, req) => {
      await authorize(req, caller, "ListUsers", "*");
      const pathPrefix = q.string("PathPrefix");
      const marker = q.string("Marker");
      const maxItems = integer(q, "MaxItems", 1, 1000);
      const result = await admin.listUsers({ ...(pathPrefix !== undefined ? { pathPrefix } : {}), ...(marker !== undefined ? { marker } : {}), ...(maxItems !== undefined ? { maxItems } : {}) });
      return { Users: result.items.map(userXml), IsTruncated: result.marker !== undefined, ...(result.marker ? { Marker: result.marker } : {}) };
    },
    DeleteUser: onUser("DeleteUser", async (user) => {
      await admin.deleteUser(user);
      return undefined;
    }),
    CreateAccessKey: async (q, caller, req) => {
      const user = await userNameOf(q, caller);
      await authorize(req, caller, "CreateAccessKey", await userArn(user));
      const key = await admin.createAccessKey(user);
      // The secret goes to the caller once, never into the audit record.
      recordOf(req).responseElements = { accessKey: { userName: key.userName, accessKeyId: key.accessKeyId, status: key.status } };
      return { AccessKey: { ...keyXml(key), SecretAccessKey: key.secretAccessKey } };
    },
    UpdateAccessKey: onUser("UpdateAccessKey", async (user, q) => {
      await admin.updateAccessKey(user, required(q, "AccessKeyId"), statusOf(q));
      return undefined;
    }, true),
    DeleteAccessKey: onUser("DeleteAccessKey", async (user, q) => {
      await admin.deleteAccessKey(user, required(q, "AccessKeyId"));
      return undefined;
    }, true),
    ListAccessKeys: onUser("ListAccessKeys", async (user, q) => {
      const keys = [...(await admin.listAccessKeys(user))].sort((a, b) => a.accessKeyId.localeCompare(b.accessKeyId));
      const p = page(q, keys, (k) => k.accessKeyId);
      return { AccessKeyMetadata: p.items.map(keyXml), IsTruncated: p.IsTruncated, ...(p.Marker ? { Marker: p.Marker } : {}) };
    }, true),
    PutUserPolicy: onUser("PutUserPolicy", async (user, q) => {
      await admin.putUserPolicy(user, required(q, "PolicyName"), required(q, "PolicyDocument"));
      return undefined;
    }),
    GetUserPolicy: onUser("GetUserPolicy", async (user, q) => {
      const policyName = required(q, "PolicyName");
      return { UserName: user, PolicyName: policyName, PolicyDocument: encodePolicy(await admin.getUserPolicy(user, policyName)) };
    }),
    DeleteUserPolicy: onUser("DeleteUserPolicy", async (user, q) => {
      await admin.deleteUserPolicy(user, required(q, "PolicyName"));
      return undefined;
    }),
    ListUserPolicies: onUser("ListUserPolicies", async (user, q) => {
      const p = page(q, [...(await admin.listUserPolicies(user))].sort(), (n) => n);
      return { PolicyNames: p.items, IsTruncated: p.IsTruncated, ...(p.Marker ? { Marker: p.Marker } : {}) };
    }),
    CreateRole: async (q, caller, req) => {
      const roleName = required(q, "RoleName");
      const assumeRolePolicyDocument = required(q, "AssumeRolePolicyDocument");
      const path = q.string("Path");
      const description = q.string("Description");
      const maxSessionDuration = integer(q, "MaxSessionDuration", 3600, 43200);
      const tags = q.tags();
      await authorize(req, caller, "CreateRole", names.role(path, roleName), requestTagContext(tags));
      const role = await admin.createRole({
        roleName, assumeRolePolicyDocument,
        ...(path !== undefined ? { path } : {}), ...(description !== undefined ? { description } : {}),
        ...(maxSessionDuration !== undefined ? { maxSessionDuration } : {}), ...(tags ? { tags } : {}),
      });
      recordOf(req).responseElements = { role: { roleName: role.roleName, roleId: role.roleId, arn: role.arn } };
      return { Role: roleXml(role) };
    },
    GetRole: onRole("GetRole", async (role) => ({ Role: roleXml(await admin.getRole(role)) })),
    ListRoles: async (q, caller, req) => {
      await authorize(req, caller, "ListRoles", "*");
      const pathPrefix = q.string("PathPrefix");
      const marker = q.string("Marker");
      const maxItems = integer(q, "MaxItems", 1, 1000);
      const result = await admin.listRoles({ ...(pathPrefix !== undefined ? { pathPrefix } : {}), ...(marker !== undefined ? { marker } : {}), ...(maxItems !== undefined ? { maxItems } : {}) });
      return { Roles: result.items.map(roleXml), IsTruncated: result.marker !== undefined, ...(result.marker ? { Marker: result.marker } : {}) };
    },
    DeleteRole: onRole("DeleteRole", async (role) => {
      await admin.deleteRole(role);
      return undefined;
    }),
    UpdateAssumeRolePolicy: onRole("UpdateAssumeRolePolicy", async (role, q) => {
      await admin.updateAssumeRolePolicy(role, required(q, "PolicyDocument"));
      return undefined;
    }),
    PutRolePolicy: onRole("PutRolePolicy", async (role, q) => {
      await admin.putRolePolicy(role, required(q, "PolicyName"), required(q, "PolicyDocument"));
      return undefined;
    }),
    GetRolePolicy: onRole("GetRolePolicy", async (role, q) => {
      const policyName = required(q, "PolicyName");
      return { RoleName: role, PolicyName: policyName, PolicyDocument: encodePolicy(await admin.getRolePolicy(role, policyName)) };
    }),
    DeleteRolePolicy: onRole("DeleteRolePolicy", async (role, q) => {
      await admin.deleteRolePolicy(role, required(q, "PolicyName"));
      return undefined;
    }),
    ListRolePolicies: onRole("ListRolePolicies", async (role, q) => {
      const p = page(q, [...(await admin.listRolePolicies(role))].sort(), (n) => n);
      return { PolicyNames: p.items, IsTruncated: p.IsTruncated, ...(p.Marker ? { Marker: p.Marker } : {}) };
    }),
  };

  return queryApi({
    name: "IAM",
    version: IAM_VERSION,
    namespace: IAM_NAMESPACE,
    eventSource: "iam.amazonaws.com",
    internalCode: "ServiceFailure",
    operations,
    members: MEMBERS,
    readOnly: (action) => /^(Get|List)/.test(action),
    authenticate: opts.authenticate,
    log: opts.log,
  });
}
