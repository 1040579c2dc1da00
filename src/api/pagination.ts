// nextToken values: opaque and tamper-proof. A token carries the store's
// position and is bound, by an HMAC, to the operation and the filters of the
// request that produced it; anything else is refused as invalid.

import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { InvalidInput } from "../core/index.js";

export class PageTokens {
  constructor(private readonly key: Buffer) {}

  private mac(payload: string): string {
    return createHmac("sha256", this.key).update(payload).digest("base64url").slice(0, 32);
  }

  /** What a token is bound to: the operation and every input except the paging fields. */
  static context(operation: string, input: Record<string, unknown>): string {
    const { nextToken: _n, maxResults: _m, ...filters } = input;
    const sorted = Object.keys(filters).sort().map((k) => [k, filters[k]]);
    return createHash("sha256").update(operation).update(JSON.stringify(sorted)).digest("base64url").slice(0, 16);
  }

  encode(context: string, position: string): string {
    const payload = Buffer.from(JSON.stringify({ c: context, p: position })).toString("base64url");
    return `${payload}.${this.mac(payload)}`;
  }

  decode(context: string, token: string): string {
    const invalid = new InvalidInput("'nextToken' is invalid: pass back exactly the nextToken of the previous page of this same request.");
    const [payload, mac] = token.split(".");
    if (!payload || !mac) throw invalid;
    const expected = Buffer.from(this.mac(payload));
    if (expected.length !== Buffer.byteLength(mac) || !timingSafeEqual(expected, Buffer.from(mac))) throw invalid;
    const { c, p } = JSON.parse(Buffer.from(payload, "base64url").toString()) as { c: string; p: string };
    if (c !== context || typeof p !== "string") throw invalid;
    return p;
  }
}
