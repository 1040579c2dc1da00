// Several API nodes on one database (docs/design.md, "Many hosts"). In cluster
// mode an `lmvm server` whose database's server lock another one holds does
// not fail: it becomes a standby. It relays its API and endpoint ports to the
// leader (src/cluster/relay.ts), tries the lock every second, and when it gets
// it (the leader's PostgreSQL session ended: it stopped, or was killed) stops
// relaying and starts the platform as a server restarted after kill -9 does,
// adopting the MicroVMs on their hosts.
//
// Every API node must hold the same secrets, or tokens, sealed values and
// endpoint certificates break on a takeover: the master key
// (<data-dir>/secrets), the root credentials (<data-dir>/credentials) and the
// endpoint proxy's CA (<data-dir>/tls). The operator copies them from the
// first server's data directory; the database keeps check values of them
// (the first leader's), and a node whose own differ stays a standby and says
// which file to copy.

import { createHmac, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { StandbyRelay, type NodeCredentials } from "../cluster/index.js";
import type { ClusterStore, PostgresStore, SecretChecks } from "../store/index.js";
import { deriveKey, type RootCredentials } from "./data-dir.js";

/** How often a standby tries the server lock. */
export const TAKEOVER_POLL_MS = 1000;
/**
 * How long a standby leaves the server lock alone after PostgreSQL came back from a restart (or
 * after it could not reach it): the leader, whose lock session the restart ended, retakes it
 * every 250 ms (postgres.ts) and should normally keep it rather than lose it to a standby (it
 * would then exit, and the MicroVMs go through an adoption for nothing).
 */
export const RESTART_GRACE_MS = 3000;

/** The check values of this node's secrets (one-way: they reveal nothing of the secrets). */
export function secretChecks(master: Buffer, root: RootCredentials, endpointCaFile: string): SecretChecks {
  const checkKey = deriveKey(master, "api-node-check");
  return {
    key: checkKey.toString("hex"),
    // Keyed with a derivation that is never stored: keyed with the stored `key`, a read of the row
    // would allow guessing the root secret offline.
    credentials: createHmac("sha256", deriveKey(master, "api-node-check-credentials")).update(`${root.accessKeyId}\n${root.secretAccessKey}`).digest("hex"),
    endpointCa: new X509Certificate(readFileSync(endpointCaFile)).fingerprint256,
  };
}

/** What differs between the recorded checks and this node's, naming the file to copy; undefined when none does. */
export function checksMismatch(recorded: SecretChecks, own: SecretChecks, files: { serverKey: string; credentials: string; tls: string }): string | undefined {
  const why: string[] = [];
  if (recorded.key !== own.key) why.push(`its master key (${files.serverKey})`);
  else if (recorded.credentials !== own.credentials) why.push(`its root credentials (${files.credentials})`);
  if (recorded.endpointCa !== own.endpointCa) why.push(`its endpoint CA (${files.tls}/ca.pem and ca.key, and delete server.pem so it is issued again)`);
  if (!why.length) return undefined;
  return `This API node's secrets are not the cluster's: ${why.join(" and ")} differ from what the leader recorded in the database, so it will not take over (tokens, sealed secrets and endpoint certificates would stop verifying). Stop it, copy those files from the first server's data directory, and start it again.`;
}

export interface LeadOptions {
  store: PostgresStore;
  cluster: ClusterStore;
  checks: SecretChecks;
  files: { serverKey: string; credentials: string; tls: string };
  /** This node's cluster listener (ip:port): recorded in the leader row, where standbys relay and agents ask for credentials. */
  clusterListen?: string;
  tls: NodeCredentials;
  api: { host: string; port: number };
  endpoint: { host: string; port: number };
  log: (event: Record<string, unknown>) => void;
  /** Called once the standby's relay listens (its ports, for server.json). */
  standing?: (ports: { apiPort: number; endpointPort: number }) => void;
}

/**
 * Returns once this node holds the server lock and has recorded itself as the leader: at once when
 * the lock is free, else after standing by (relaying) until it is. Answers the ports to bind (the
 * standby's own, so clients keep the addresses they used).
 */
export async function leadOrStandBy(o: LeadOptions): Promise<{ apiPort: number; endpointPort: number }> {
  const nodeId = `${hostname()}/${process.pid}`;
  const mismatch = async (): Promise<string | undefined> => {
    const leader = await o.cluster.leader();
    return leader ? checksMismatch(leader.checks, o.checks, o.files) : undefined;
  };
  const record = async () => {
    const recorded = await o.cluster.recordLeader({ nodeId, address: o.clusterListen!, checks: o.checks });
    const why = checksMismatch(recorded, o.checks, o.files);
    if (why) throw new Error(why);
    o.log({ msg: "leader: this API node holds the server lock", nodeId, clusterListen: o.clusterListen ?? null });
  };
  // A leader records where standbys relay and agents get credentials: one without it would break them all.
  if (!o.clusterListen) throw new Error("An API node in cluster mode needs --cluster-listen <ip:port>: the leader records it in the database for the standbys and agents, so without it this node will neither lead nor stand by.");
  let why = await mismatch();
  if (!why && (await o.store.tryClaimServer())) {
    await record();
    return { apiPort: o.api.port, endpointPort: o.endpoint.port };
  }
  const relay = new StandbyRelay({
    tls: o.tls,
    leaderAddress: async () => (await o.cluster.leader())?.address,
    api: o.api,
    endpoint: o.endpoint,
    log: o.log,
  });
  await relay.listen();
  o.standing?.({ apiPort: relay.apiPort, endpointPort: relay.endpointPort });
  const leader = await o.cluster.leader().catch(() => undefined);
  o.log({ msg: "standby: another API node leads; relaying this node's API and endpoint connections to it, trying the server lock every second", nodeId, leader: leader?.nodeId ?? null, leaderAddress: leader?.address ?? null, apiPort: relay.apiPort, endpointPort: relay.endpointPort });
  if (why) o.log({ level: "error", msg: why });
  let startedAt = await o.store.postgresStartedAt().catch(() => undefined);
  let graceUntil = 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, TAKEOVER_POLL_MS));
    try {
      const started = await o.store.postgresStartedAt();
      if (startedAt === undefined || started !== startedAt) {
        if (startedAt !== undefined || graceUntil < 0) o.log({ msg: "standby: PostgreSQL is back after a restart or outage; leaving the server lock to the leader for a grace", graceMs: RESTART_GRACE_MS });
        graceUntil = performance.now() + RESTART_GRACE_MS;
        startedAt = started;
      }
      if (performance.now() < graceUntil) continue;
      const now = await mismatch();
      if (now) {
        if (now !== why) o.log({ level: "error", msg: now });
        why = now;
        continue;
      }
      if (why) o.log({ msg: "standby: this API node's secrets now match the cluster's" });
      why = undefined;
      if (!(await o.store.tryClaimServer())) continue;
    } catch (err) {
      // Unreachable: once it answers again, the grace applies as after a restart.
      startedAt = undefined;
      graceUntil = -1;
      o.log({ level: "warn", msg: "standby: the database could not be asked about the leader; trying again", err: (err as Error).message });
      continue;
    }
    o.log({ msg: "taking over: the leader's server lock is free (it stopped or died); ending the relay and starting the platform here", nodeId });
    await relay.close();
    await record();
    return { apiPort: relay.apiPort, endpointPort: relay.endpointPort };
  }
}
