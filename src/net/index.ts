// Public face of sandbox networking: a network namespace and address per sandbox.
export { NetworkNamespaces, type SandboxNetwork } from "./netns.js";
export { installFirewall, FIREWALL_TABLE } from "./firewall.js";
