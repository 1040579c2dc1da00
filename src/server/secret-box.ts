// The SecretBox port with AES-256-GCM: a random 96-bit nonce per seal, the
// 128-bit tag checked on open, so a sealed value altered by one bit (or sealed
// under another key) is refused. The text form is base64url of
// version(1) | nonce(12) | tag(16) | ciphertext.

import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import type { SecretBox } from "../core/index.js";

const VERSION = 1;

export class AesGcmBox implements SecretBox {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error("AesGcmBox needs a 256-bit key");
  }

  seal(plain: string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce);
    const body = Buffer.concat([cipher.update(plain, "utf8"), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), nonce, cipher.getAuthTag(), body]).toString("base64url");
  }

  open(sealed: string): string {
    if (typeof sealed !== "string" || !/^[A-Za-z0-9_-]+$/.test(sealed)) throw new Error("not a sealed value");
    const raw = Buffer.from(sealed, "base64url");
    if (raw.length < 29 || raw[0] !== VERSION) throw new Error("not a sealed value");
    const decipher = createDecipheriv("aes-256-gcm", this.key, raw.subarray(1, 13));
    decipher.setAuthTag(raw.subarray(13, 29));
    return Buffer.concat([decipher.update(raw.subarray(29)), decipher.final()]).toString("utf8");
  }
}
