// The data directory holds everything the platform keeps; deleting it resets
// the platform. Layout:
//   lmvm.db            SQLite database (WAL: lmvm.db-wal, lmvm.db-shm)
//   credentials        AWS shared-credentials file, [default] = root keys (0600)
//   server.json        where the running server listens, for the CLI to find it
//   secrets/server.key 32 random bytes; keys for tokens and nextTokens derive from it (0600)
// Later components add artifacts/, images/, snapshots/, logs/ and ca/.

import { randomBytes, hkdfSync } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { writeFileAtomic } from "../os/index.js";

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

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function generateCredentials(): RootCredentials {
  const id = [...randomBytes(16)].map((b) => ALNUM[b % ALNUM.length]).join("");
  return { accessKeyId: `LKIA${id}`, secretAccessKey: randomBytes(30).toString("base64").replace(/[+/]/g, "x") };
}

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

/**
 * The root credentials: read from the credentials file, or created on first
 * start from LMVM_ROOT_ACCESS_KEY_ID/LMVM_ROOT_SECRET_ACCESS_KEY or at random.
 */
export function rootCredentials(dir: string): RootCredentials {
  const file = paths(dir).credentials;
  if (existsSync(file)) {
    const found = parseCredentialsFile(readFileSync(file, "utf8"));
    if (!found) throw new Error(`${file} has no [default] profile with aws_access_key_id and aws_secret_access_key. Fix it, or delete it to generate new keys.`);
    return found;
  }
  const { LMVM_ROOT_ACCESS_KEY_ID: id, LMVM_ROOT_SECRET_ACCESS_KEY: secret } = process.env;
  if (Boolean(id) !== Boolean(secret)) {
    throw new Error("Set both LMVM_ROOT_ACCESS_KEY_ID and LMVM_ROOT_SECRET_ACCESS_KEY, or neither.");
  }
  const creds = id && secret ? { accessKeyId: id, secretAccessKey: secret } : generateCredentials();
  writeFileAtomic(file, `[default]\naws_access_key_id = ${creds.accessKeyId}\naws_secret_access_key = ${creds.secretAccessKey}\n`);
  return creds;
}

/** The server's master secret, created on first start. */
export function serverKey(dir: string): Buffer {
  const file = paths(dir).serverKey;
  if (existsSync(file)) return readFileSync(file);
  mkdirSync(join(dir, "secrets"), { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  writeFileAtomic(file, key);
  return key;
}

/** A sub-key for one purpose, so a leak of one use cannot forge another. */
export function deriveKey(master: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), `lmvm:${purpose}`, 32));
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
