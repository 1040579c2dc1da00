// Cluster mode's operator commands (docs/design.md, "Many hosts"):
//   lmvm cluster init --dir C                    makes the cluster CA
//   lmvm cluster issue --dir C --name N --role server|agent [--address ip,...]
//   lmvm agent --database postgres://… --data-dir D --cluster-dir C --listen ip:port [--advertise ip:port]
//   lmvm hosts list|drain <id>|undrain <id> --database postgres://…
// The hosts commands read and write the cluster's database directly: they are
// the operator's, like pg_ctl, not API calls signed by an account.

import { parseArgs } from "node:util";
import { UsageError } from "./flags.js";
import { renderTable } from "./table.js";
import { stopSignal } from "./server-command.js";

export const CLUSTER_HELP = `NAME
    cluster, agent, hosts

DESCRIPTION
    Many hosts: one lmvm server (API, endpoints, placement) and an lmvm agent on each
    host that runs its sandboxes and the image builds the server places there, sharing a
    PostgreSQL database. All traffic
    between them is HTTPS with mutual TLS under a CA that 'lmvm cluster init' makes.

SYNOPSIS
    lmvm cluster init --dir <cluster-dir>
    lmvm cluster issue --dir <cluster-dir> --name <node> --role server|agent [--address <ip|dns>,...]
    lmvm agent --database <postgres://...> --data-dir <dir> --cluster-dir <dir> --listen <ip:port>
               [--advertise <ip:port>] [--host-id <id>] [--server <ip:port>] [--platform systrap|ptrace]
               [--microvm-disk-mib <MiB>] [--dns-resolvers <addr,...>] [--region <region>]
               [--object-store s3://bucket[/prefix]|file:///dir] [--object-store-endpoint <url>]
               [--object-store-path-style true|false]   (the server's: images and checkpoints
                                                          this host lacks are fetched from it)
               [--base-image-cache <dir>] [--debian-mirror <url>] [--s3-endpoint <url>]
               [--artifact-ca-file <pem>]               (for builds placed here; their phase
                                                          deadlines and limits are the server's)
    lmvm hosts list [--database <postgres://...>] [--output json|table]
    lmvm hosts drain <host-id> [--database <postgres://...>]
    lmvm hosts undrain <host-id> [--database <postgres://...>]

    The cluster directory holds ca.pem (every node needs it), ca.key (only where certificates
    are issued) and nodes/<name>.{pem,key}. A node whose directory has ca.key issues its own
    certificate at start; elsewhere issue it with 'lmvm cluster issue' and copy it over.
    The agent's MicroVMs get their execution role's credentials from the leading server's
    --cluster-listen, which it reads from the database (it follows a standby that took over);
    --server is that address until a server has recorded itself. --database defaults to
    LMVM_DATABASE.
`;

function flags(argv: string[], options: Record<string, { type: "string" | "boolean" }>): { values: Record<string, string | undefined> & { help?: string }; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
    return { values: { ...(values as Record<string, string | undefined>), ...(values.help ? { help: "yes" } : {}) }, positionals };
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${CLUSTER_HELP}`);
  }
}

function database(value: string | undefined): string {
  const url = value ?? (process.env.LMVM_DATABASE || undefined);
  if (!url) throw new UsageError("--database is required (or LMVM_DATABASE): cluster mode keeps its hosts in PostgreSQL, postgres://user[:password]@host[:port]/db.");
  if (!/^postgres(ql)?:\/\/./.test(url)) throw new UsageError(`--database must be a PostgreSQL URL, postgres://user[:password]@host[:port]/database; got '${url.replace(/:[^:@/]*@/, ":***@")}'.`);
  return url;
}

export async function clusterCommand(argv: string[]): Promise<number> {
  const { values, positionals } = flags(argv, { dir: { type: "string" }, name: { type: "string" }, role: { type: "string" }, address: { type: "string" }, help: { type: "boolean" } });
  const sub = positionals[0];
  if (values.help || !sub || sub === "help") {
    process.stdout.write(CLUSTER_HELP);
    return 0;
  }
  if (!values.dir) throw new UsageError(`lmvm cluster ${sub} needs --dir <cluster-dir>.`);
  const { initCluster, issueNode } = await import("../cluster/index.js");
  if (sub === "init") {
    const { caCert, created } = await initCluster(values.dir);
    process.stdout.write(`${JSON.stringify({ caCert, created }, null, 2)}\n`);
    return 0;
  }
  if (sub === "issue") {
    if (!values.name) throw new UsageError("lmvm cluster issue needs --name <node>.");
    if (values.role !== "server" && values.role !== "agent") throw new UsageError(`--role must be server or agent; got '${values.role ?? ""}'.`);
    const addresses = (values.address ?? "").split(",").map((a) => a.trim()).filter(Boolean);
    const out = await issueNode(values.dir, values.name, values.role, addresses);
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return 0;
  }
  throw new UsageError(`Unknown cluster command '${sub}': init or issue.\n\n${CLUSTER_HELP}`);
}

export async function hostsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = flags(argv, { database: { type: "string" }, output: { type: "string" }, help: { type: "boolean" } });
  const sub = positionals[0];
  if (values.help || !sub || sub === "help") {
    process.stdout.write(CLUSTER_HELP);
    return 0;
  }
  const output = values.output ?? "json";
  if (output !== "json" && output !== "table") throw new UsageError(`--output must be json or table; got '${output}'.`);
  const { ClusterStore } = await import("../store/index.js");
  const cluster = await ClusterStore.open(database(values.database));
  try {
    if (sub === "list") {
      const listed = await cluster.listHosts();
      const leases = new Map(await Promise.all(listed.map(async (h) => [h.id, (await cluster.leasesOf(h.id)).map((l) => l.microvmId).sort()] as const)));
      const hosts = listed.map((h) => ({
        HostId: h.id,
        Address: h.address,
        State: h.state,
        ...(h.stateReason ? { StateReason: h.stateReason } : {}),
        MemoryMiB: h.memoryMiB,
        FreeMemoryMiB: h.freeMemoryMiB,
        Cpus: h.cpus,
        DiskMiB: h.diskMiB,
        FreeDiskMiB: h.freeDiskMiB,
        Architecture: h.architecture,
        RunscVersion: h.runscVersion,
        Platform: h.platform,
        HeartbeatAgeSeconds: Math.round(h.heartbeatAgeMs / 100) / 10,
        RegisteredAt: h.registeredAt.toISOString(),
        Microvms: leases.get(h.id) ?? [],
      }));
      process.stdout.write(output === "table" ? renderTable({ Hosts: hosts }, "Hosts", process.stdout.columns ?? 120) : `${JSON.stringify({ Hosts: hosts }, null, 2)}\n`);
      return 0;
    }
    if (sub === "drain" || sub === "undrain") {
      const id = positionals[1];
      if (!id) throw new UsageError(`lmvm hosts ${sub} needs the host's id (lmvm hosts list shows them).`);
      const h = sub === "drain" ? await cluster.drainHost(id) : await cluster.undrainHost(id);
      if (!h) {
        process.stderr.write(`No host '${id}' in the cluster: lmvm hosts list shows them.\n`);
        return 254;
      }
      if (sub === "drain" && h.state === "LOST") {
        process.stderr.write(`Host '${id}' is LOST: nothing is placed on it anyway.\n`);
        return 254;
      }
      process.stdout.write(`${JSON.stringify({ HostId: h.id, State: h.state, ...(h.stateReason ? { StateReason: h.stateReason } : {}) }, null, 2)}\n`);
      return 0;
    }
    throw new UsageError(`Unknown hosts command '${sub}': list, drain or undrain.\n\n${CLUSTER_HELP}`);
  } finally {
    await cluster.close();
  }
}

/** How long `lmvm agent` may take to stop after SIGTERM or SIGINT. */
const SHUTDOWN_DEADLINE_MS = 20_000;

export async function agentCommand(argv: string[]): Promise<number> {
  const { values, positionals } = flags(argv, {
    database: { type: "string" }, "data-dir": { type: "string" }, "cluster-dir": { type: "string" }, listen: { type: "string" }, advertise: { type: "string" },
    "host-id": { type: "string" }, server: { type: "string" }, platform: { type: "string" }, "microvm-disk-mib": { type: "string" }, "dns-resolvers": { type: "string" }, region: { type: "string" }, help: { type: "boolean" },
    "object-store": { type: "string" }, "object-store-endpoint": { type: "string" }, "object-store-path-style": { type: "string" },
    "base-image-cache": { type: "string" }, "debian-mirror": { type: "string" }, "s3-endpoint": { type: "string" }, "artifact-ca-file": { type: "string" },
  });
  if (values.help || positionals[0] === "help") {
    process.stdout.write(CLUSTER_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected arguments: ${positionals.join(" ")}`);
  const db = database(values.database);
  if (!values["cluster-dir"]) throw new UsageError("lmvm agent needs --cluster-dir <dir> (made by 'lmvm cluster init'): agents talk to the server only over mutual TLS.");
  if (!values.listen) throw new UsageError("lmvm agent needs --listen <ip:port>, where the server reaches it.");
  const { SANDBOX_PLATFORMS } = await import("../runtime/index.js");
  if (values.platform !== undefined && !(SANDBOX_PLATFORMS as readonly string[]).includes(values.platform)) throw new UsageError(`--platform must be one of ${SANDBOX_PLATFORMS.join(", ")}; got '${values.platform}'.`);
  const diskMiB = values["microvm-disk-mib"] === undefined ? undefined : Number(values["microvm-disk-mib"]);
  if (diskMiB !== undefined && (!Number.isInteger(diskMiB) || diskMiB < 16)) throw new UsageError(`--microvm-disk-mib must be a whole number of MiB, at least 16; got '${values["microvm-disk-mib"]}'.`);
  const dnsResolvers = values["dns-resolvers"]?.split(",").map((a) => a.trim()).filter(Boolean);
  const objectStoreUrl = values["object-store"] ?? (process.env.LMVM_OBJECT_STORE || undefined);
  if (objectStoreUrl !== undefined && !/^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.*)$/.test(objectStoreUrl)) {
    throw new UsageError(`--object-store must be s3://bucket[/prefix] or file:///absolute/path (the server's); got '${objectStoreUrl}'.`);
  }
  const pathStyle = values["object-store-path-style"];
  if (pathStyle !== undefined && pathStyle !== "true" && pathStyle !== "false") throw new UsageError(`--object-store-path-style must be true or false; got '${pathStyle}'.`);
  const objectStore = objectStoreUrl
    ? { url: objectStoreUrl, ...(values["object-store-endpoint"] ? { endpoint: values["object-store-endpoint"] } : {}), ...(pathStyle ? { pathStyle: pathStyle === "true" } : {}) }
    : undefined;
  const { startAgent, defaultDataDir, jsonLog } = await import("../server/index.js");
  let agent;
  try {
    agent = await startAgent({
      database: db,
      dataDir: values["data-dir"] ?? defaultDataDir(),
      clusterDir: values["cluster-dir"],
      listen: values.listen,
      ...(values.advertise ? { advertise: values.advertise } : {}),
      ...(values["host-id"] ? { hostId: values["host-id"] } : {}),
      ...(values.server ? { server: values.server } : {}),
      ...(values.platform ? { sandboxPlatform: values.platform as "systrap" | "ptrace" } : {}),
      ...(diskMiB ? { microvmDiskMiB: diskMiB } : {}),
      ...(dnsResolvers ? { dnsResolvers } : {}),
      region: values.region ?? "us-east-1",
      ...(objectStore ? { objectStore } : {}),
      ...(values["base-image-cache"] ? { baseImageCache: values["base-image-cache"] } : {}),
      ...(values["debian-mirror"] ? { debianMirror: values["debian-mirror"] } : {}),
      ...(values["s3-endpoint"] ? { s3Endpoint: values["s3-endpoint"] } : {}),
      ...(values["artifact-ca-file"] ? { artifactCaFile: values["artifact-ca-file"] } : {}),
      log: jsonLog,
    });
  } catch (err) {
    if (/must be|needs|No cluster CA|No certificate/.test((err as Error).message)) throw new UsageError((err as Error).message);
    throw err;
  }
  const signal = await stopSignal();
  jsonLog({ msg: "lmvm agent stopping", signal, hostId: agent.hostId });
  process.once("SIGINT", () => process.exit(1));
  process.once("SIGTERM", () => process.exit(1));
  const stopped = await Promise.race([
    agent.stop().then(() => true, (err: Error) => (jsonLog({ level: "error", msg: "lmvm agent stop failed", err: err.message }), true)),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), SHUTDOWN_DEADLINE_MS)),
  ]);
  jsonLog({ msg: stopped ? "lmvm agent stopped" : "lmvm agent did not stop in time; exiting anyway" });
  process.exit(stopped ? 0 : 1);
}
