// Public face of the shell ingress: interactive shells and one-off commands inside MicroVMs, over WebSockets.
export { ShellIngress, type ShellIngressOptions, STDIN, STDOUT, STDERR, CLOSE_MICROVM_STOPPING } from "./shell-ingress.js";
