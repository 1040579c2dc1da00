// Identifiers exposed to users: ARNs for images, managed images, MicroVMs and
// network connectors, and the MicroVM id format. One place builds and parses
// them so every operation agrees on what a well-formed identifier is.

import { randomBytes } from "node:crypto";

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

export function microvmArn(scope: Scope, id: string): string {
  return `arn:aws:lambda:${scope.region}:${scope.accountId}:microvm:${id}`;
}

export function networkConnectorArn(region: string, name: ConnectorName): string {
  return `arn:aws:lambda:${region}:aws:network-connector:aws-network-connector:${name}`;
}

export type ConnectorName = "ALL_INGRESS" | "HTTP_INGRESS" | "SHELL_INGRESS" | "NO_INGRESS" | "INTERNET_EGRESS";
export const INGRESS_CONNECTORS: ConnectorName[] = ["ALL_INGRESS", "HTTP_INGRESS", "SHELL_INGRESS", "NO_INGRESS"];
export const EGRESS_CONNECTORS: ConnectorName[] = ["INTERNET_EGRESS"];

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
