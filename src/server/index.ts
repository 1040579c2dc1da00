// Public face of the composition root: start the whole platform.
export { startPlatform, DEFAULTS, jsonLog, type Platform, type PlatformConfig } from "./platform.js";
export { defaultDataDir, readServerInfo, parseCredentialsFile, paths } from "./data-dir.js";
export { startAgent, type Agent, type AgentConfig } from "./agent.js";
