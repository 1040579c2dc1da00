// Public face of the builder: Dockerfile builds into root filesystems, their logs, and base images.
export { DockerfileBuilder, DEFAULT_LIMITS, builtImageDir, readBuiltImage, type BuilderOptions, type BuiltImage, type BuildLogs, type BuildLogWriter, type BuildSettings } from "./builder.js";
export { artifactPath, checkFileArtifact } from "./artifacts.js";
export type { OciConfig } from "./buildah.js";
export { declareArgsInEveryStage, fromImages, type FromImage } from "./dockerfile.js";
export { DEFAULT_PHASE_TIMEOUTS, parsePhaseTimeouts, PHASES, type BuildPhase, type PhaseTimeouts } from "./phases.js";
