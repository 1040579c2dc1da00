// Public face of cluster mode (docs/design.md, "Many hosts"): the cluster CA and node
// certificates, the agent's RPC service, and the server's runtime over agents.
export { initCluster, issueNode, nodeCredentials, clusterPaths, peerIdentity, type NodeCredentials, type NodeRole } from "./ca.js";
export { AgentService, HEARTBEAT_MS, LEASE_DEADLINE_MS, type AgentServiceOptions } from "./agent-service.js";
export { LeaseLost } from "./wire.js";
export { RemoteRuntime, FRESH_MS, HOST_LOST_MS, type RemoteRuntimeOptions } from "./remote-runtime.js";
export { serveCredentials, ServerCredentials } from "./credentials.js";
export { StandbyRelay, openRelay, parseRelayRequest, asClient, RELAY_TARGETS, type RelayTarget, type RelayRequest } from "./relay.js";
export { RemoteBuilder, NO_HOST_WAIT_MS, MAX_HOST_LOSSES, type RemoteBuilderOptions } from "./remote-builder.js";
export { AgentBuilds, type AgentBuildsOptions } from "./agent-builds.js";
