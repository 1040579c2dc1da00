// Public face of the sandbox runtime. Today: gVisor sandboxes (run,
// checkpoint, restore, exec, destroy); the SandboxRuntime the core uses is built on it.
export { Gvisor, type GvisorOptions, type SandboxSpec, type ImageConfig } from "./gvisor.js";
