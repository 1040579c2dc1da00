// What each API operation asks of the caller's policies: the action, the
// resource ARNs and the condition keys the request brings, as AWS names them
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html,
// list_amazoncloudwatchlogs.html, list_awsidentityandaccessmanagementiam.html).
// One operation may need several answers: RunMicrovm needs lambda:RunMicrovm on
// the image, iam:PassRole on its execution role and lambda:PassNetworkConnector
// on each connector it names. The API asks `Identities.authorize` for each, in
// order, before the operation runs. No HTTP here.

import { imageArn, isArn, managedImageArn, MICROVM_ID_PATTERN, microvmArn, parseArn, type Scope } from "./arn.js";
import { InvalidInput } from "./errors.js";
import { LAMBDA_SERVICE_PRINCIPAL, type AuthorizationRequest, type Caller, type ConditionContext, type Identities } from "./identity.js";
import type { OperationName } from "./inputs.js";
import type { ConnectorOperationName } from "./rate-limits.js";

/** Reads the tags a resource carries now (`{}` for none, or for a resource that does not exist). */
export type TagLookup = (resourceArn: string) => Promise<Record<string, string>>;

/** `aws:RequestTag/<key>` for every tag, and `aws:TagKeys`. */
export function requestTagContext(tags: Record<string, string> | undefined): ConditionContext {
  if (!tags) return {};
  const context: ConditionContext = { "aws:TagKeys": Object.keys(tags) };
  for (const [k, v] of Object.entries(tags)) context[`aws:RequestTag/${k}`] = v;
  return context;
}

/** iam:PassRole on a role handed to Lambda, with iam:PassedToService (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html). */
export function passRole(roleArn: string): AuthorizationRequest {
  return { action: "iam:PassRole", resources: [roleArn], context: { "iam:PassedToService": LAMBDA_SERVICE_PRINCIPAL } };
}

/** A version-qualified connector ARN's tags live on the unqualified ARN. */
function unqualifiedConnector(arn: string): string {
  return arn.replace(/^(arn:[^:]+:lambda:[^:]*:[0-9]{12}:network-connector:[A-Za-z0-9_-]+):[0-9]+$/, "$1");
}

async function withTags(request: AuthorizationRequest, tagsOf: TagLookup, tagged: (arn: string) => string | undefined = (a) => a): Promise<AuthorizationRequest> {
  const resourceTags: Record<string, Record<string, string>> = {};
  for (const arn of request.resources) {
    const owner = arn === "*" ? undefined : tagged(arn);
    if (!owner) continue;
    const tags = await tagsOf(owner);
    if (Object.keys(tags).length) resourceTags[arn] = tags;
  }
  return Object.keys(resourceTags).length ? { ...request, resourceTags } : request;
}

/** lambda:PassNetworkConnector on each connector ARN, with the connector's tags (`aws:ResourceTag/…`). */
async function passConnectors(connectors: readonly string[] | undefined, tagsOf: TagLookup): Promise<AuthorizationRequest[]> {
  const unique = [...new Set(connectors ?? [])];
  if (!unique.length) return [];
  return [await withTags({ action: "lambda:PassNetworkConnector", resources: unique, context: {} }, tagsOf, unqualifiedConnector)];
}

/**
 * The ARNs of the MicroVMs API's resources, from the identifiers requests carry.
 * An identifier that is no identifier of its kind at all is refused here with
 * the operation's own validation message, before any policy is read.
 */
export class ResourceNames {
  constructor(private readonly scope: Scope) {}

  /** An image name or ARN (an ARN of another account or Region stays as given: it is what the caller asked for). */
  image(identifier: string): string {
    if (!isArn(identifier)) return imageArn(this.scope, identifier);
    const arn = parseArn(identifier);
    if (!arn || arn.service !== "lambda" || arn.resourceType !== "microvm-image") {
      throw new InvalidInput(`'${identifier}' is not a MicroVM image ARN (arn:aws:lambda:${this.scope.region}:${this.scope.accountId}:microvm-image:<name>).`);
    }
    return identifier;
  }

  managedImage(identifier: string): string {
    return isArn(identifier) ? identifier : managedImageArn(this.scope.region, identifier);
  }

  microvm(identifier: string): string {
    if (MICROVM_ID_PATTERN.test(identifier)) return microvmArn(this.scope, identifier);
    const arn = parseArn(identifier);
    if (arn && arn.resourceType === "microvm" && MICROVM_ID_PATTERN.test(arn.resourceId)) return identifier;
    throw new InvalidInput(`'microvmIdentifier' must be a MicroVM id such as microvm-0123456789abcdef0, as returned by run-microvm; got '${identifier}'.`);
  }

  connector(identifier: string): string {
    if (isArn(identifier)) return identifier;
    return `arn:aws:lambda:${this.scope.region}:${this.scope.accountId}:network-connector:${identifier}`;
  }

  logGroup(name: string): string {
    return `arn:aws:logs:${this.scope.region}:${this.scope.accountId}:log-group:${name}:*`;
  }

  logStream(group: string, stream: string): string {
    return `arn:aws:logs:${this.scope.region}:${this.scope.accountId}:log-group:${group}:log-stream:${stream}`;
  }

  user(path: string | undefined, name: string): string {
    return `arn:aws:iam::${this.scope.accountId}:user${path ?? "/"}${name}`;
  }

  role(path: string | undefined, name: string): string {
    return `arn:aws:iam::${this.scope.accountId}:role${path ?? "/"}${name}`;
  }
}

type Untyped = Record<string, unknown>;
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const strings = (v: unknown): string[] | undefined => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : undefined);

/**
 * The authorisation requests of one MicroVMs API operation, from its validated
 * input. Actions are `lambda:<Operation>`; the resource is the image ARN for
 * image, version and build operations and RunMicrovm, the MicroVM's ARN for
 * MicroVM operations, the tagged resource for tag operations, `*` for lists
 * with no parent.
 */
export async function microvmsApiAuthorization(scope: Scope, operation: OperationName, input: Untyped, tagsOf: TagLookup): Promise<AuthorizationRequest[]> {
  const names = new ResourceNames(scope);
  const action = `lambda:${operation}`;
  const on = (resources: string[], context: ConditionContext = {}) => withTags({ action, resources, context }, tagsOf);
  const imageOf = () => names.image(String(input.imageIdentifier));
  const microvmOf = () => names.microvm(String(input.microvmIdentifier));
  switch (operation) {
    case "CreateMicrovmImage": {
      const tags = input.tags as Record<string, string> | undefined;
      return [
        await on([imageArn(scope, String(input.name))], requestTagContext(tags)),
        ...(str(input.buildRoleArn) ? [passRole(str(input.buildRoleArn)!)] : []),
        ...(await passConnectors(strings(input.egressNetworkConnectors), tagsOf)),
      ];
    }
    case "UpdateMicrovmImage":
      return [
        await on([imageOf()]),
        ...(str(input.buildRoleArn) ? [passRole(str(input.buildRoleArn)!)] : []),
        ...(await passConnectors(strings(input.egressNetworkConnectors), tagsOf)),
      ];
    case "GetMicrovmImage":
    case "DeleteMicrovmImage":
    case "ListMicrovmImageVersions":
    case "GetMicrovmImageVersion":
    case "UpdateMicrovmImageVersion":
    case "DeleteMicrovmImageVersion":
    case "ListMicrovmImageBuilds":
    case "GetMicrovmImageBuild":
      return [await on([imageOf()])];
    case "ListManagedMicrovmImageVersions":
      return [await on([names.managedImage(String(input.imageIdentifier))])];
    case "ListMicrovmImages":
    case "ListManagedMicrovmImages":
    case "ListMicrovms":
      return [await on(["*"])];
    case "RunMicrovm":
      return [
        await on([imageOf()]),
        ...(str(input.executionRoleArn) ? [passRole(str(input.executionRoleArn)!)] : []),
        ...(await passConnectors([...(strings(input.ingressNetworkConnectors) ?? []), ...(strings(input.egressNetworkConnectors) ?? [])], tagsOf)),
      ];
    case "GetMicrovm":
    case "SuspendMicrovm":
    case "ResumeMicrovm":
    case "TerminateMicrovm":
    case "CreateMicrovmAuthToken":
    case "CreateMicrovmShellAuthToken":
      return [await on([microvmOf()])];
    case "TagResource":
      return [await on([String(input.Resource)], requestTagContext(input.Tags as Record<string, string>))];
    case "UntagResource":
      return [await on([String(input.Resource)], { "aws:TagKeys": strings(input.TagKeys) ?? [] })];
    case "ListTags":
      return [await on([String(input.Resource)])];
  }
}

/**
 * A Lambda Core network-connector operation: `lambda:<Operation>` on the
 * connector's ARN (`*` for ListNetworkConnectors); CreateNetworkConnector
 * brings its tags as aws:RequestTag/aws:TagKeys and, with an OperatorRole,
 * asks iam:PassRole for it.
 */
export async function connectorAuthorization(scope: Scope, operation: ConnectorOperationName, identifier: string | undefined, body: Untyped, tagsOf: TagLookup): Promise<AuthorizationRequest[]> {
  const names = new ResourceNames(scope);
  const action = `lambda:${operation}`;
  const role = str(body.OperatorRole);
  switch (operation) {
    case "ListNetworkConnectors":
      return [{ action, resources: ["*"], context: {} }];
    case "CreateNetworkConnector": {
      const tags = body.Tags && typeof body.Tags === "object" && !Array.isArray(body.Tags) ? (body.Tags as Record<string, string>) : undefined;
      return [
        { action, resources: [names.connector(String(body.Name ?? ""))], context: requestTagContext(tags) },
        ...(role ? [passRole(role)] : []),
      ];
    }
    default: {
      const request = await withTags({ action, resources: [names.connector(identifier ?? "")], context: {} }, tagsOf, unqualifiedConnector);
      return [request, ...(operation === "UpdateNetworkConnector" && role ? [passRole(role)] : [])];
    }
  }
}

/**
 * A CloudWatch Logs operation (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatchlogs.html):
 * `logs:<Operation>` on the log group (`arn:…:log-group:<name>:*`), on the
 * log stream for GetLogEvents, and on `*` for DescribeLogGroups.
 */
export function logsAuthorization(scope: Scope, operation: string, input: Untyped): AuthorizationRequest[] {
  const names = new ResourceNames(scope);
  const action = `logs:${operation}`;
  const groupName = (): string | undefined => {
    const identifier = str(input.logGroupIdentifier);
    if (identifier?.startsWith("arn:")) return /^arn:aws:logs:[^:]*:\d{12}:log-group:(.+?)(:\*)?$/.exec(identifier)?.[1];
    return str(input.logGroupName) ?? identifier;
  };
  const group = groupName();
  if (operation === "GetLogEvents" && group !== undefined && str(input.logStreamName) !== undefined) {
    return [{ action, resources: [names.logStream(group, str(input.logStreamName)!)], context: {} }];
  }
  if (operation !== "DescribeLogGroups" && group !== undefined) return [{ action, resources: [names.logGroup(group)], context: {} }];
  return [{ action, resources: ["*"], context: {} }];
}

/** Asks each request in turn; the first refusal (AccessDenied) ends it. */
export async function authorizeAll(identities: Identities, caller: Caller, requests: AuthorizationRequest[]): Promise<void> {
  for (const request of requests) await identities.authorize(caller, request);
}

/** The resources an audit record names: every ARN asked about, each once. */
export function resourcesOf(requests: AuthorizationRequest[]): string[] {
  return [...new Set(requests.flatMap((r) => r.resources).filter((r) => r !== "*"))];
}
