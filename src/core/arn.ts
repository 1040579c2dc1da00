// Identifiers exposed to users: ARNs for images, managed images, MicroVMs and
// network connectors, and the MicroVM id format. One place builds and parses
// them so every operation agrees on what a well-formed identifier is.

import { randomBytes } from "node:crypto";
import { InvalidInput } from "./errors.js";

export interface Scope {
  region: string;
  accountId: string;
}

export const IMAGE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const MICROVM_ID_PATTERN = /^microvm-[0-9a-f]{17}$/;
export const IMAGE_VERSION_PATTERN = /^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$/;

export function imageArn(scope: Scope, name: string): string {
  return `arn:aws:lambda:${scope.region}:${scope.accountId}:microvm-image:${name}`;
}

export function managedImageArn(region: string, name: string): string {
  return `arn:aws:lambda:${region}:aws:microvm-image:${name}`;
}

/**
 * The only ARN forms a MicroVM or an image may be named by: partition `aws`,
 * service `lambda`, ':' separators. Anything else ARN-shaped is refused rather
 * than acted on, so that what is authorised is the resource acted on.
 */
export const MICROVM_ARN_PATTERN = /^arn:aws:lambda:([a-z0-9-]+):([0-9]{12}):microvm:(microvm-[0-9a-f]{17})$/;
export const IMAGE_ARN_PATTERN = /^arn:aws:lambda:([a-z0-9-]+):([0-9]{12}):microvm-image:([A-Za-z0-9][A-Za-z0-9._-]{0,127})$/;

export function microvmArn(scope: Scope, id: string): string {
  return `arn:aws:lambda:${scope.region}:${scope.accountId}:microvm:${id}`;
}

export function networkConnectorArn(region: string, name: ConnectorName): string {
  return `arn:aws:lambda:${region}:aws:network-connector:aws-network-connector:${name}`;
}

export type IngressConnector = "HTTP_INGRESS" | "SHELL_INGRESS" | "ALL_INGRESS" | "NO_INGRESS";
export type EgressConnector = "INTERNET_EGRESS";
export type ConnectorName = IngressConnector | EgressConnector;
/** The managed ingress connectors (https://docs.aws.amazon.com/lambda/latest/dg/microvms-launching.html). */
export const INGRESS_CONNECTORS: IngressConnector[] = ["HTTP_INGRESS", "SHELL_INGRESS", "ALL_INGRESS", "NO_INGRESS"];
export const EGRESS_CONNECTORS: EgressConnector[] = ["INTERNET_EGRESS"];

const CONNECTOR_ARN = /^arn:aws:lambda:([a-z0-9-]+):aws:network-connector:aws-network-connector:([A-Za-z0-9_-]+)$/;

/**
 * Checks one connector ARN against the ones this region offers. A bare name or
 * anything else that is no network connector ARN fails as the service does
 * ("Malformed network connector ARN"); a well-formed ARN of a connector that
 * is not on offer fails naming the ones that are.
 */
export function parseConnectorArn<N extends ConnectorName>(region: string, value: string, allowed: readonly N[], field: string): N {
  const m = CONNECTOR_ARN.exec(value);
  const example = networkConnectorArn(region, allowed[0]!);
  if (!m) {
    const hint = (allowed as readonly string[]).includes(value) ? ` Pass the connector's ARN, ${networkConnectorArn(region, value as N)}.` : ` Connectors are ARNs such as ${example}.`;
    throw new InvalidInput(`${field}: Malformed network connector ARN: '${value}'.${hint}`);
  }
  const available = allowed.map((n) => networkConnectorArn(region, n)).join(", ");
  if (m[1] !== region || !(allowed as readonly string[]).includes(m[2]!)) {
    throw new InvalidInput(`${field}: '${value}' is not a known connector in ${region}. Available: ${available}.`);
  }
  return m[2] as N;
}

export function newMicrovmId(): string {
  return `microvm-${randomBytes(9).toString("hex").slice(0, 17)}`;
}

export interface ParsedArn {
  partition: string;
  service: string;
  region: string;
  account: string;
  resourceType: string;
  resourceId: string;
}

const ARN_PATTERN = /^arn:([a-z-]+):([a-z0-9-]+):([a-z0-9-]*):([0-9]{12}|aws|):([a-z-]+)[:/](.+)$/;

export function parseArn(value: string): ParsedArn | undefined {
  const m = ARN_PATTERN.exec(value);
  if (!m) return undefined;
  return {
    partition: m[1]!,
    service: m[2]!,
    region: m[3]!,
    account: m[4]!,
    resourceType: m[5]!,
    resourceId: m[6]!,
  };
}

export function isArn(value: string): boolean {
  return value.startsWith("arn:");
}

export const ROLE_ARN_PATTERN = /^arn:aws[a-z-]*:iam::[0-9]{12}:role\/[A-Za-z0-9+=,.@_\/-]{1,512}$/;
