// What a sandbox may reach on the network, resolved from its egress network
// connectors when it is bound: at RunMicrovm for a MicroVM (kept for its life,
// across suspend and resume), when a build starts for a build's RUN steps and
// snapshot boot. The core resolves connectors into an EgressPolicy; src/net
// enforces it on the host (routes, nftables, NAT, the DNS resolver, shaping).
// The core does no I/O here: host names in rules are resolved by the adapter
// that provisions connectors.

/** A fixed address inside every sandbox with egress: its DNS resolver (AWS's VPC resolver address, which resolves on the service's internet path). */
export const DNS_RESOLVER_ADDRESS = "169.254.169.253";
/** The instance-metadata address (the identity issue serves credentials there); the only other link-local address a sandbox may reach. */
export const METADATA_ADDRESS = "169.254.169.254";

export type EgressProtocol = "tcp" | "udp" | "icmp" | "all";

/** One destination a network connector grants. */
export interface EgressRule {
  /** IPv4 CIDRs ("10.77.0.0/24", "10.77.0.5/32"): the rule's own, plus what its host name resolved to when the connector was provisioned. */
  cidrs: string[];
  /** The host name this rule was written with, if any (for messages and views). */
  hostName?: string;
  protocol: EgressProtocol;
  /** Inclusive port range for tcp and udp; absent means every port. */
  ports?: { from: number; to: number };
}

export interface EgressPolicy {
  /** INTERNET_EGRESS: public IPv4 destinations over TCP, and DNS through DNS_RESOLVER_ADDRESS. */
  internet: boolean;
  /** What the named private-network connectors grant, in order. */
  rules: EgressRule[];
  /** The connector ARNs (version-qualified for connectors of the account) the policy was resolved from. */
  connectors: string[];
}

export const NO_EGRESS: EgressPolicy = Object.freeze({ internet: false, rules: [], connectors: [] }) as EgressPolicy;

/** Whether the policy lets the sandbox send anything at all (and so gets routes and DNS). */
export function hasEgress(policy: EgressPolicy | undefined): boolean {
  return !!policy && (policy.internet || policy.rules.length > 0);
}

/** What a MicroVM gets when RunMicrovm names no egress connector: the documentation says the public internet; an operator may choose none (`lmvm server --default-egress`). */
export type DefaultEgress = "internet" | "none";
export const DEFAULT_EGRESS: DefaultEgress = "internet";
