// Who is calling, and what they may do: the shared vocabulary of identity.
// Principals (the account's root, IAM users, assumed-role sessions), the
// request an authorisation decision is made on, temporary credentials, and
// the two ports the rest of lmvm uses: `Identities` (the API authenticates
// and authorises every request through it) and `RoleCredentialSource` (the
// instance-metadata service asks it for a role's credentials on behalf of a
// MicroVM or a build). No HTTP, SQL or crypto library here.

/** The service principal that assumes build and execution roles (AWS: microvms-security.html, Trust policies). */
export const LAMBDA_SERVICE_PRINCIPAL = "lambda.amazonaws.com";

/** The role name the metadata service lists under iam/security-credentials/ (AWS: always `execution_role`). */
export const EXECUTION_ROLE_CREDENTIALS_NAME = "execution_role";

/** Longest lifetime of temporary credentials, AssumeRole's and the metadata service's (12 h). */
export const MAX_SESSION_SECONDS = 12 * 60 * 60;

export type PrincipalKind = "root" | "user" | "assumed-role";

/** An authenticated caller. */
export interface Caller {
  kind: PrincipalKind;
  accountId: string;
  /**
   * As AWS prints it: `arn:aws:iam::<acct>:root`, `arn:aws:iam::<acct>:user/<path><name>`,
   * `arn:aws:sts::<acct>:assumed-role/<role>/<session>`.
   */
  arn: string;
  /** `aws:PrincipalArn`: the user's ARN, the role's ARN for a role session, the root ARN. */
  principalArn: string;
  /** GetCallerIdentity's UserId: the account id for root, AIDA… for a user, `AROA…:<session>` for a role session. */
  userId: string;
  accessKeyId: string;
  /** `aws:SourceIp`: the address the request came from. */
  sourceIp: string;
  /** A role session's expiry. */
  expiresAt?: Date;
  /** A role session's role ARN and session name. */
  roleArn?: string;
  sessionName?: string;
}

/** Values of condition keys for one request (`aws:SourceIp`, `aws:ResourceTag/team`, `aws:TagKeys`, `iam:PassedToService`…). */
export type ConditionContext = Record<string, string | string[] | boolean | undefined>;

/** One authorisation question: may the caller do `action` on each of `resources`? */
export interface AuthorizationRequest {
  /** `service:Operation`, e.g. `lambda:RunMicrovm`, `iam:PassRole`, `logs:GetLogEvents`. */
  action: string;
  /** Resource ARNs (each must be allowed), or `["*"]` for actions with no resource. */
  resources: string[];
  /** Request-wide keys; `aws:ResourceTag/*` may differ per resource (`resourceTags`). */
  context: ConditionContext;
  /** Tags of each resource in `resources` that has any, for `aws:ResourceTag/<key>`. */
  resourceTags?: Record<string, Record<string, string>>;
}

/** Temporary credentials, as STS and the metadata service hand them out. */
export interface TemporaryCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

/** What SigV4 verification needs for an access key: its secret, and who it stands for. */
export interface ResolvedKey {
  secretAccessKey: string;
  caller: Caller;
}

/** The identity service as the API sees it. */
export interface Identities {
  /**
   * The secret and caller of an access key; with a session token for temporary keys. Throws
   * `Unauthenticated` for an unknown or deactivated key, a missing, altered or replayed token, an
   * expired session, or a session whose role is gone.
   */
  resolveKey(accessKeyId: string, sessionToken: string | undefined, sourceIp: string): Promise<ResolvedKey>;
  /**
   * Allows or throws `AccessDenied` with AWS's message ("User: <arn> is not authorized to perform:
   * <action> on resource: <arn> because no identity-based policy allows the <action> action", or
   * "… with an explicit deny in an identity-based policy"). Root is always allowed.
   */
  authorize(caller: Caller, request: AuthorizationRequest): Promise<void>;
}

/** What the instance-metadata service asks for on behalf of a MicroVM or a build. */
export interface RoleCredentialSource {
  /**
   * Credentials for `roleArn` assumed by lambda.amazonaws.com for `sourceArn` (the MicroVM's or the
   * image's ARN), with `sessionName` (the MicroVM id or the build id). Throws `AccessDenied` when the
   * role does not exist or its trust policy does not let lambda.amazonaws.com assume it.
   */
  serviceCredentials(roleArn: string, sourceArn: string, sessionName: string): Promise<TemporaryCredentials>;
}

export interface IamUser {
  userName: string;
  /** AIDA… */
  userId: string;
  arn: string;
  path: string;
  createDate: Date;
  tags: Record<string, string>;
}

export type AccessKeyStatus = "Active" | "Inactive";

export interface IamAccessKey {
  userName: string;
  accessKeyId: string;
  status: AccessKeyStatus;
  createDate: Date;
  /** Only in CreateAccessKey's answer; never stored in clear, never shown again. */
  secretAccessKey?: string;
}

export interface IamRole {
  roleName: string;
  /** AROA… */
  roleId: string;
  arn: string;
  path: string;
  createDate: Date;
  /** The trust policy, as JSON text. */
  assumeRolePolicyDocument: string;
  description?: string;
  /** Longest session AssumeRole grants, 3600–43200 s (default 3600). */
  maxSessionDuration: number;
  tags: Record<string, string>;
}

export interface IamPage<T> {
  items: T[];
  /** Where the next page starts, when there is one. */
  marker?: string;
}

export interface AssumeRoleInput {
  roleArn: string;
  roleSessionName: string;
  durationSeconds?: number;
  /** A session policy (JSON): the session gets the intersection of it and the role's policies. */
  policy?: string;
  externalId?: string;
  tags?: Record<string, string>;
}

export interface AssumedRole {
  credentials: TemporaryCredentials;
  /** arn:aws:sts::<acct>:assumed-role/<role>/<session> and AROA…:<session>. */
  assumedRoleUser: { arn: string; assumedRoleId: string };
}

/**
 * IAM's and STS's operations, as the core does them. Authorisation of the caller for the IAM
 * action itself happens before (the API asks `Identities.authorize`); these methods check the
 * resources' own rules (names, policy grammar, trust policies, conflicts) and throw `IamFault`.
 */
export interface IamAdministration {
  createUser(input: { userName: string; path?: string; tags?: Record<string, string> }): Promise<IamUser>;
  getUser(userName: string): Promise<IamUser>;
  listUsers(input: { pathPrefix?: string; marker?: string; maxItems?: number }): Promise<IamPage<IamUser>>;
  /** Refused (DeleteConflict) while the user has access keys or policies, as on AWS. */
  deleteUser(userName: string): Promise<void>;
  createAccessKey(userName: string): Promise<IamAccessKey>;
  updateAccessKey(userName: string, accessKeyId: string, status: AccessKeyStatus): Promise<void>;
  deleteAccessKey(userName: string, accessKeyId: string): Promise<void>;
  listAccessKeys(userName: string): Promise<IamAccessKey[]>;
  /** The user an access key belongs to (for operations that default to the caller's own user). */
  userOfAccessKey(accessKeyId: string): Promise<string | undefined>;
  putUserPolicy(userName: string, policyName: string, document: string): Promise<void>;
  getUserPolicy(userName: string, policyName: string): Promise<string>;
  deleteUserPolicy(userName: string, policyName: string): Promise<void>;
  listUserPolicies(userName: string): Promise<string[]>;
  createRole(input: { roleName: string; assumeRolePolicyDocument: string; path?: string; description?: string; maxSessionDuration?: number; tags?: Record<string, string> }): Promise<IamRole>;
  getRole(roleName: string): Promise<IamRole>;
  listRoles(input: { pathPrefix?: string; marker?: string; maxItems?: number }): Promise<IamPage<IamRole>>;
  /** Refused (DeleteConflict) while the role has policies. */
  deleteRole(roleName: string): Promise<void>;
  updateAssumeRolePolicy(roleName: string, document: string): Promise<void>;
  putRolePolicy(roleName: string, policyName: string, document: string): Promise<void>;
  getRolePolicy(roleName: string, policyName: string): Promise<string>;
  deleteRolePolicy(roleName: string, policyName: string): Promise<void>;
  listRolePolicies(roleName: string): Promise<string[]>;
  /** STS AssumeRole: the role's trust policy decides whether `caller` may. */
  assumeRole(caller: Caller, input: AssumeRoleInput): Promise<AssumedRole>;
}
