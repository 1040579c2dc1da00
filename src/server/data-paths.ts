// Where the data directory is and the files in it that clients read: the
// credentials file and server.json. A leaf on purpose: the CLI imports it to
// find the server, and must not load the database driver, Fastify or native
// addons that the rest of src/server pulls in (see docs/design.md).

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export function defaultDataDir(): string {
  if (process.env.LMVM_DATA_DIR) return process.env.LMVM_DATA_DIR;
  return process.getuid?.() === 0 ? "/var/lib/lmvm" : join(homedir(), ".local", "share", "lmvm");
}

export const paths = (dir: string) => ({
  database: join(dir, "lmvm.db"),
  credentials: join(dir, "credentials"),
  serverInfo: join(dir, "server.json"),
  serverKey: join(dir, "secrets", "server.key"),
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
