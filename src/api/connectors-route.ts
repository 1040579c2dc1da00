// The Lambda Core network-connector API on the control API's port
// (https://docs.aws.amazon.com/lambda/latest/lambda-core/API_Operations.html):
// restJson1 under /2026-04-04/network-connectors, SigV4-signed for `lambda`
// with the same credentials as the MicroVMs API. Errors are Lambda Core's:
// InvalidParameterValueException (400), ResourceNotFoundException (404),
// ResourceConflictException (409), TooManyRequestsException (429),
// ServiceException (500), with {"Type", "message"} bodies.

import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  AccessDenied, connectorAuthorization, connectorArn, DomainError, IdempotencyMismatch, InvalidInput, NotFound, QuotaExceeded, ResourceInUse, StateConflict, Throttled, Unauthenticated,
  type AuthorizationRequest, type Caller, type ConnectorOperationName, type ConnectorView, type ControlPlane, type Scope,
} from "../core/index.js";
import { AwsError, sendError, toAwsError } from "./errors.js";
import type { PageTokens } from "./pagination.js";
import { recordOf } from "./request-record.js";
import { CONNECTORS_PATH } from "./wire.js";

export interface ConnectorRoutesOptions {
  controlPlane: ControlPlane;
  pageTokens: PageTokens;
  scope: Scope;
  /** Checks the request's SigV4 signature; returns the raw body and query, and who is calling. */
  authenticate: (req: FastifyRequest) => Promise<{ body: Buffer; rawQuery: string; caller: Caller }>;
  /** Asks the caller's policies (refuses with AccessDenied) and names the resources in the request's audit record. */
  authorize: (req: FastifyRequest, caller: Caller, requests: AuthorizationRequest[]) => Promise<void>;
  log: (event: Record<string, unknown>) => void;
}

const DEFAULT_MAX_ITEMS = 50;

function lambdaCoreError(err: unknown): AwsError {
  if (err instanceof AwsError) {
    // Signature and routing failures keep their types; the MicroVMs API's ValidationException is Lambda Core's InvalidParameterValueException.
    return err.type === "ValidationException" ? new AwsError("InvalidParameterValueException", 400, err.message, { Type: "User" }) : err;
  }
  if (err instanceof DomainError) {
    if (err instanceof Unauthenticated) return toAwsError(err);
    if (err instanceof InvalidInput) return new AwsError("InvalidParameterValueException", 400, err.message, { Type: "User" });
    if (err instanceof NotFound) return new AwsError("ResourceNotFoundException", 404, err.message, { Type: "User" });
    if (err instanceof StateConflict || err instanceof ResourceInUse || err instanceof IdempotencyMismatch) return new AwsError("ResourceConflictException", 409, err.message, { Type: "User" });
    if (err instanceof QuotaExceeded) return new AwsError("NetworkConnectorLimitExceededException", 400, err.message, { Type: "User" });
    if (err instanceof Throttled) return new AwsError("TooManyRequestsException", 429, err.message, { Type: "User" }, { "retry-after": String(err.retryAfterSeconds) });
    if (err instanceof AccessDenied) return new AwsError("AccessDeniedException", 403, err.message, { Type: "User" });
  }
  return new AwsError("ServiceException", 500, "The lmvm service encountered an internal error; the server log has the details.", { Type: "Service" });
}

const iso = (d: Date) => d.toISOString();

function typeOf(view: { configuration: { HostEgressConfiguration?: unknown } }): string {
  return view.configuration.HostEgressConfiguration ? "HOST_EGRESS" : "VPC_EGRESS";
}

/** The configuration as stored, with what each host name resolved to (lmvm's ResolvedCidrs) once provisioned. */
function configurationView(v: ConnectorView["version"]): Record<string, unknown> {
  const host = v.configuration.HostEgressConfiguration;
  if (!host) return v.configuration as Record<string, unknown>;
  return {
    HostEgressConfiguration: {
      ...host,
      Destinations: host.Destinations.map((d, i) => {
        const rule = v.rules?.[i];
        return d.HostName && rule ? { ...d, ResolvedCidrs: rule.cidrs } : d;
      }),
    },
  };
}

function fullView(scope: Scope, view: ConnectorView): Record<string, unknown> {
  const { connector: c, version: v, qualified } = view;
  // Unqualified, the connector as a whole (the version in force, its state, its last update); qualified, that version.
  const state = qualified ? v.state : c.state;
  const reason = qualified ? v.stateReason : c.stateReason;
  const code = qualified ? v.stateReasonCode : c.stateReasonCode;
  return {
    Arn: qualified ? connectorArn(scope, c.name, v.version) : c.arn,
    Name: c.name,
    Id: c.id,
    Version: v.version,
    LatestVersion: c.latestVersion,
    Configuration: configurationView(v),
    ...(v.operatorRole ? { OperatorRole: v.operatorRole } : {}),
    State: state,
    ...(reason ? { StateReason: reason } : {}),
    ...(code ? { StateReasonCode: code } : {}),
    LastModified: iso(qualified ? v.updatedAt : c.updatedAt),
    ...(!qualified && c.lastUpdateStatus ? { LastUpdateStatus: c.lastUpdateStatus } : {}),
    ...(!qualified && c.lastUpdateStatusReason ? { LastUpdateStatusReason: c.lastUpdateStatusReason } : {}),
    ...(!qualified && c.lastUpdateStatusReasonCode ? { LastUpdateStatusReasonCode: c.lastUpdateStatusReasonCode } : {}),
    Tags: view.tags,
  };
}

function pageOf(opts: ConnectorRoutesOptions, operation: string, rawQuery: string, filters: Record<string, unknown>): { limit: number; after?: string; context: string } {
  const q = new URLSearchParams(rawQuery);
  const maxItems = q.get("MaxItems");
  let limit = DEFAULT_MAX_ITEMS;
  if (maxItems !== null) {
    if (!/^[0-9]{1,3}$/.test(maxItems) || Number(maxItems) < 1 || Number(maxItems) > 100) throw new InvalidInput(`MaxItems must be a whole number from 1 to 100; got '${maxItems}'.`);
    limit = Number(maxItems);
  }
  const context = `${operation}:${JSON.stringify(filters)}`;
  const marker = q.get("Marker");
  if (marker === null) return { limit, context };
  try {
    return { limit, after: opts.pageTokens.decode(context, marker), context };
  } catch {
    throw new InvalidInput("Marker is invalid: pass back exactly the NextMarker of the previous page of this same request.");
  }
}

function json(body: Buffer): Record<string, unknown> {
  if (!body.length) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch (err) {
    throw new InvalidInput(`The request body is not valid JSON: ${(err as Error).message}`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new InvalidInput("The request body must be a JSON object.");
  return parsed as Record<string, unknown>;
}

function onlyMembers(body: Record<string, unknown>, allowed: string[], operation: string): void {
  const extra = Object.keys(body).filter((k) => !allowed.includes(k));
  if (extra.length) throw new InvalidInput(`${operation} takes no member ${extra.map((k) => `'${k}'`).join(", ")}; its members are ${allowed.join(", ")}.`);
}

export function registerConnectorRoutes(app: FastifyInstance, opts: ConnectorRoutesOptions): void {
  const { controlPlane: cp, scope } = opts;
  const connectors = cp.connectors;

  const route = (method: "GET" | "POST" | "PUT" | "DELETE", url: string, operation: ConnectorOperationName, status: number, run: (req: FastifyRequest, body: Buffer, rawQuery: string) => Promise<Record<string, unknown>>) => {
    app.route({
      method,
      url,
      handler: async (req: FastifyRequest, reply: FastifyReply) => {
        const requestId = randomUUID();
        const record = recordOf(req);
        const identifier = (req.params as { Identifier?: string }).Identifier;
        Object.assign(record, { eventSource: "lambda.amazonaws.com", eventName: operation, requestId, readOnly: method === "GET" });
        try {
          const { body, rawQuery, caller } = await opts.authenticate(req);
          cp.admit(operation);
          const input = method === "POST" || method === "PUT" ? json(body) : {};
          const query = Object.fromEntries(new URLSearchParams(rawQuery));
          record.requestParameters = { ...(identifier !== undefined ? { Identifier: identifier } : {}), ...query, ...input };
          await opts.authorize(req, caller, await connectorAuthorization(scope, operation, identifier, input, (arn) => cp.opts.store.getTags(arn)));
          const output = await run(req, body, rawQuery);
          return reply.code(status).header("x-amzn-requestid", requestId).header("content-type", "application/json").send(JSON.stringify(output));
        } catch (err) {
          const aws = lambdaCoreError(err);
          if (aws.status >= 500) opts.log({ level: "error", msg: "request failed", operation, requestId, err: err instanceof Error ? err.stack : String(err) });
          return sendError(reply, requestId, aws);
        }
      },
    });
  };
  const identifier = (req: FastifyRequest) => (req.params as { Identifier: string }).Identifier;

  route("POST", CONNECTORS_PATH, "CreateNetworkConnector", 202, async (_req, body) => {
    const input = json(body);
    onlyMembers(input, ["Name", "Configuration", "OperatorRole", "ClientToken", "Tags"], "CreateNetworkConnector");
    return fullView(scope, await connectors.create(input));
  });

  route("GET", CONNECTORS_PATH, "ListNetworkConnectors", 200, async (_req, _body, rawQuery) => {
    const state = new URLSearchParams(rawQuery).get("State") ?? undefined;
    const page = pageOf(opts, "ListNetworkConnectors", rawQuery, { state });
    const result = await connectors.list(state, page);
    const items = result.items.map(({ connector: c, version: v }) => (
      { Arn: c.arn, Id: c.id, Name: c.name, Type: v ? typeOf(v) : "HOST_EGRESS", State: c.state, LatestVersion: c.latestVersion, LastModified: iso(c.updatedAt) }
    ));
    return { NetworkConnectors: items, ...(result.next ? { NextMarker: opts.pageTokens.encode(page.context, result.next) } : {}) };
  });

  route("GET", `${CONNECTORS_PATH}/:Identifier`, "GetNetworkConnector", 200, async (req) => fullView(scope, await connectors.get(identifier(req))));

  route("PUT", `${CONNECTORS_PATH}/:Identifier`, "UpdateNetworkConnector", 202, async (req, body) => {
    const input = json(body);
    onlyMembers(input, ["Configuration", "OperatorRole", "ClientToken"], "UpdateNetworkConnector");
    return fullView(scope, await connectors.update(identifier(req), input));
  });

  route("DELETE", `${CONNECTORS_PATH}/:Identifier`, "DeleteNetworkConnector", 202, async (req) => {
    const view = await connectors.delete(identifier(req));
    const full = fullView(scope, view);
    return { Arn: full.Arn, Name: full.Name, Id: full.Id, Configuration: full.Configuration, ...(full.OperatorRole ? { OperatorRole: full.OperatorRole } : {}), State: view.qualified ? "DELETING" : view.connector.state };
  });

  route("GET", `${CONNECTORS_PATH}/:Identifier/versions`, "ListNetworkConnectorVersions", 200, async (req, _body, rawQuery) => {
    const state = new URLSearchParams(rawQuery).get("State") ?? undefined;
    const id = identifier(req);
    const page = pageOf(opts, "ListNetworkConnectorVersions", rawQuery, { id, state });
    const { connector, page: result } = await connectors.listVersions(id, state, page);
    return {
      NetworkConnectorVersions: result.items.map((v) => ({
        Arn: connector.arn, Id: connector.id, Name: connector.name, State: v.state, Version: v.version,
        VersionArn: connectorArn(scope, connector.name, v.version), LastModified: iso(v.updatedAt),
        ...(v.stateReason ? { StateReason: v.stateReason } : {}), ...(v.stateReasonCode ? { StateReasonCode: v.stateReasonCode } : {}),
      })),
      ...(result.next ? { NextMarker: opts.pageTokens.encode(page.context, result.next) } : {}),
    };
  });
}
