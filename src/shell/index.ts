// Public face of the shell ingress: interactive shells and one-off commands inside MicroVMs, over WebSockets.
export { ShellIngress, type ShellIngressOptions } from "./shell-ingress.js";
export * from "./protocol.js";
