// The data directory's layout: every path under it is made here, and the
// composition root (platform.ts) hands each component the directories it
// owns; no other module joins a path onto the data directory. Also the files
// in it that clients read: the credentials file and server.json. A leaf on
// purpose: the CLI imports it to find the server, and must not load the
// database driver, Fastify or native addons that the rest of src/server pulls
// in (see docs/design.md).

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export function defaultDataDir(): string {
  if (process.env.LMVM_DATA_DIR) return process.env.LMVM_DATA_DIR;
  return process.getuid?.() === 0 ? "/var/lib/lmvm" : join(homedir(), ".local", "share", "lmvm");
}

export const paths = (dir: string) => ({
  /** SQLite database (WAL: lmvm.db-wal, lmvm.db-shm). */
  database: join(dir, "lmvm.db"),
  /** AWS shared-credentials file, [default] = root keys (0600). */
  credentials: join(dir, "credentials"),
  /** Where the running server listens, for the CLI to find it. */
  serverInfo: join(dir, "server.json"),
  secrets: join(dir, "secrets"),
  /** 32 random bytes; keys for tokens and nextTokens derive from it (0600). */
  serverKey: join(dir, "secrets", "server.key"),
  /** The endpoint proxy's CA and server certificate (src/proxy/certificates.ts). */
  tls: join(dir, "tls"),
  /** Built versions: <name>/<version>/<architecture>/{rootfs,config.json,snapshot/,snapshot-boot.log} (src/builder, src/runtime/snapshots.ts). */
  images: join(dir, "images"),
  /** Code zips uploaded through the console, <sha256>.zip, each passed to builds as a file:// artifact (src/console). */
  uploads: join(dir, "uploads"),
  /** Scratch space of running builds, <buildId>/, removed after each. */
  builds: join(dir, "builds"),
  /** buildah's store (storage/, run/). */
  buildah: join(dir, "buildah"),
  /** Managed base images' root filesystems, unless --base-image-cache puts them elsewhere. */
  baseImages: join(dir, "base-images"),
  buildLogs: join(dir, "logs", "builds"),
  microvmLogs: join(dir, "logs", "microvms"),
  /** Markers of the network namespaces this server owns (src/net). */
  networks: join(dir, "networks"),
  /** Markers of the network namespaces of builds' RUN steps (src/builder): kept apart, so that the builder's recovery removes every one a killed server left. */
  buildNetworks: join(dir, "build-networks"),
  /** runsc --root of build-time snapshot sandboxes, and of MicroVMs' sandboxes. */
  runscBuilds: join(dir, "runsc", "builds"),
  runscMicrovms: join(dir, "runsc", "microvms"),
  /** Bundles and overlay disks of build-time snapshot sandboxes. */
  snapshotSandboxes: join(dir, "sandboxes"),
  /** Sandbox scratch disks formatted ahead of time, unmounted (src/runtime/prepared.ts); emptied at every start and stop. */
  prepared: join(dir, "prepared"),
  /** Markers of the network namespaces prepared ahead of time, not yet any sandbox's (src/runtime/prepared.ts). */
  preparedNetworks: join(dir, "prepared-networks"),
  /** Per MicroVM: <id>/{sandbox.json,sandbox/,checkpoint/,exec/} (src/runtime/microvms.ts). */
  microvms: join(dir, "microvms"),
  /** Archives on their way to or from the object store (src/objects), emptied at every start. */
  objects: join(dir, "objects"),
  /** Warm-pool clones: pool-<random>/ (bundle, overlay, disk) and pool-<random>.log until a MicroVM claims them (src/runtime/pool.ts). */
  pool: join(dir, "pool"),
});

export interface RootCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** One profile of an AWS shared-credentials file. */
export function parseCredentialsFile(text: string, profile = "default"): RootCredentials | undefined {
  let current = "";
  const values: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const section = /^\s*\[\s*([^\]]+?)\s*\]\s*$/.exec(line);
    if (section) {
      current = section[1]!;
      continue;
    }
    const kv = /^\s*([A-Za-z_]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (kv && current === profile) values[kv[1]!.toLowerCase()] = kv[2]!;
  }
  const { aws_access_key_id: accessKeyId, aws_secret_access_key: secretAccessKey } = values;
  return accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : undefined;
}

export interface ServerInfo {
  apiEndpoint: string;
  region: string;
  accountId: string;
  pid: number;
  /** The endpoint proxy: https://<microvmId>.<endpointDomain>:<endpointPort>, listening on endpointHost. */
  endpointDomain?: string;
  endpointPort?: number;
  endpointHost?: string;
  /** The CA that signs the proxy's certificate; clients trust it. */
  caFile?: string;
}

export function readServerInfo(dir: string): ServerInfo | undefined {
  try {
    return JSON.parse(readFileSync(paths(dir).serverInfo, "utf8")) as ServerInfo;
  } catch {
    return undefined;
  }
}
