// Public face of sandbox networking: a network namespace and address per
// sandbox, and what it may reach (egress: routes, firewall, DNS, shaping).
export { NetworkNamespaces, routesFor, STRAY_NETWORK_AGE_MS, type SandboxNetwork } from "./netns.js";
export { installFirewall, removeSandboxChain, FIREWALL_TABLE, DENIED_RANGES, baseRules, sandboxRules, removalRules, grantMatches } from "./firewall.js";
export { EgressGateway, shapingArgs, SHAPING_QUEUE_SECONDS, type EgressLimits, type NetworkCounters, type EgressGatewayOptions } from "./egress.js";
export { DnsForwarder, hostResolvers, nameserversOf, errorAnswer, standardQuery, DNS_QUERIES_PER_SECOND, DNS_MAX_IN_FLIGHT, DNS_QUERY_DEADLINE_MS } from "./dns.js";
