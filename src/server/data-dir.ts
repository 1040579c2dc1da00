// The data directory holds everything the platform keeps; deleting it resets
// the platform. Its layout is made in data-paths.ts (a leaf the CLI imports);
// this module creates what the server needs there on first start: the root
// credentials and the master secret.

import { randomBytes, hkdfSync } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { writeFileAtomic } from "../os/index.js";
import { parseCredentialsFile, paths, type RootCredentials } from "./data-paths.js";

export { defaultDataDir, paths, parseCredentialsFile, readServerInfo, type RootCredentials, type ServerInfo } from "./data-paths.js";

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function generateCredentials(): RootCredentials {
  const id = [...randomBytes(16)].map((b) => ALNUM[b % ALNUM.length]).join("");
  return { accessKeyId: `LKIA${id}`, secretAccessKey: randomBytes(30).toString("base64").replace(/[+/]/g, "x") };
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
  mkdirSync(paths(dir).secrets, { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  writeFileAtomic(file, key);
  return key;
}

/** A sub-key for one purpose, so a leak of one use cannot forge another. */
export function deriveKey(master: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), `lmvm:${purpose}`, 32));
}
