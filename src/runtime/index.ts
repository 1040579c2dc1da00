// Public face of the sandbox runtime: gVisor sandboxes, their cgroups, lifecycle hooks, and
// the build-time snapshot.
export { Gvisor, PlatformMismatch, SANDBOX_PLATFORMS, DEFAULT_SANDBOX_PLATFORM, runscVersion, type SandboxPlatform, type CheckpointStamp, SandboxAborted, SandboxSetupError, type GvisorOptions, type SandboxSpec, type ImageConfig } from "./gvisor.js";
export { callHook, HookAborted, HookFailure, runHookBody, MICROVM_ID_HEADER, type HookName } from "./hooks.js";
export { Snapshotter, SnapshotCancelled, SnapshotFailure, SNAPSHOT_PHASE_SECONDS, SETTLE_SECONDS, type SnapshotPhase, type SnapshotRequest, type SnapshotSizes } from "./snapshots.js";
export { SandboxCgroups, untilQuiet, type CgroupLayout } from "./cgroups.js";
export { MicrovmRuntime, type MicrovmRuntimeOptions, type SandboxRecord, type BuiltVersion } from "./microvms.js";
export { PreparedResources, type PreparedOptions } from "./prepared.js";
