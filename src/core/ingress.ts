// What a MicroVM's ingress network connectors let in, as AWS Lambda MicroVMs
// rules it (https://docs.aws.amazon.com/lambda/latest/dg/microvms-launching.html,
// microvms-networking.html, microvms-troubleshooting.html, and measurements of
// the live service): HTTP_INGRESS opens the endpoint, SHELL_INGRESS the shell,
// ALL_INGRESS the endpoint only (not the shell), NO_INGRESS nothing. RunMicrovm
// checks the set (checkIngressAtRun); token minting here and the endpoint proxy
// both ask ingressRefusal, so the two cannot disagree.

import { INGRESS_CONNECTORS, networkConnectorArn, parseConnectorArn, type IngressConnector } from "./arn.js";
import { InvalidInput } from "./errors.js";

/** The ingress a MicroVM gets when RunMicrovm names none (AWS's agent skill, iam-and-security). */
export const DEFAULT_INGRESS: IngressConnector = "HTTP_INGRESS";

export type IngressKind = "endpoint" | "shell";

/**
 * The ingress connectors RunMicrovm records, as ARNs: the given ones without
 * repeats, or HTTP_INGRESS when none is given (so GetMicrovm shows what the
 * MicroVM accepts). NO_INGRESS with another ingress connector is refused.
 * ALL_INGRESS with another is accepted, as the service does; tokens for such
 * a MicroVM are refused (ingressRefusal).
 */
export function checkIngressAtRun(region: string, arns: string[] | undefined): string[] {
  const names = [...new Set((arns ?? []).map((a) => parseConnectorArn(region, a, INGRESS_CONNECTORS, "ingressNetworkConnectors")))];
  if (!names.length) return [networkConnectorArn(region, DEFAULT_INGRESS)];
  if (names.includes("NO_INGRESS") && names.length > 1) {
    throw new InvalidInput(
      `ingressNetworkConnectors: NO_INGRESS turns all inbound access off, so it cannot be combined with ${names.filter((n) => n !== "NO_INGRESS").join(" or ")}. Pass NO_INGRESS alone, or leave it out.`,
    );
  }
  return names.map((n) => networkConnectorArn(region, n));
}

/** The connector names in a MicroVM's recorded ingress ARNs; a record without any (lmvm before it recorded the default) has the default. */
export function ingressNames(arns: readonly string[]): IngressConnector[] {
  const names = arns.map((a) => a.slice(a.lastIndexOf(":") + 1)).filter((n): n is IngressConnector => (INGRESS_CONNECTORS as string[]).includes(n));
  return names.length ? names : [DEFAULT_INGRESS];
}

/**
 * Why a MicroVM with these ingress connectors (recorded ARNs) takes no `kind`
 * access (no token of that kind, no such connection at its endpoint), or
 * undefined when it does.
 */
export function ingressRefusal(arns: readonly string[], kind: IngressKind): string | undefined {
  const names = ingressNames(arns);
  const list = names.join(", ");
  if (names.includes("ALL_INGRESS") && names.length > 1) {
    return `ALL_INGRESS cannot be combined with other ingress network connectors; use HTTP_INGRESS and/or SHELL_INGRESS instead. This MicroVM was run with ${list}; run a new one.`;
  }
  if (names.includes("NO_INGRESS")) {
    return `This MicroVM was run with the NO_INGRESS network connector, so it accepts no inbound access (no endpoint, no shell). Run a new one with HTTP_INGRESS and/or SHELL_INGRESS.`;
  }
  if (kind === "shell" && !names.includes("SHELL_INGRESS")) {
    return `Shell access requires SHELL_INGRESS network connector. This MicroVM was run with ${list}${names.includes("ALL_INGRESS") ? " (ALL_INGRESS does not include the shell)" : ""}; run a new one with SHELL_INGRESS (with HTTP_INGRESS as well for its endpoint).`;
  }
  if (kind === "endpoint" && !names.includes("HTTP_INGRESS") && !names.includes("ALL_INGRESS")) {
    return `Endpoint access requires the HTTP_INGRESS or ALL_INGRESS network connector. This MicroVM was run with ${list} only; run a new one with HTTP_INGRESS (and SHELL_INGRESS for a shell).`;
  }
  return undefined;
}
