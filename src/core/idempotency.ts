// clientToken idempotency. A retried request with the same token and the same
// body returns the resource it first created; the same token with a different
// body is refused. What is remembered is the created resource's identity, so
// a replay reports that resource as it is now.

import { createHash } from "node:crypto";
import { IdempotencyMismatch } from "./errors.js";
import type { Clock, Store } from "./ports.js";

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .filter((k) => k !== "clientToken" && (value as Record<string, unknown>)[k] !== undefined)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

export function requestHash(request: unknown): string {
  return createHash("sha256").update(JSON.stringify(canonical(request))).digest("hex");
}

/**
 * Runs `create` inside one transaction unless `clientToken` was seen before.
 * Returns the identity `create` produced, first time or replayed.
 */
export async function once<Identity>(
  store: Store,
  clock: Clock,
  key: { accountId: string; operation: string; clientToken: string | undefined },
  request: unknown,
  create: (tx: Store) => Promise<Identity>,
): Promise<Identity> {
  const { clientToken } = key;
  if (!clientToken) return store.transaction(create);
  const hash = requestHash(request);
  return store.transaction(async (tx) => {
    const seen = await tx.getIdempotencyRecord(key.accountId, key.operation, clientToken);
    if (seen) {
      if (seen.requestHash !== hash) {
        throw new IdempotencyMismatch(
          `clientToken '${clientToken}' was already used for a different ${key.operation} request. ` +
            "Use a new clientToken for a new request, or repeat the original request exactly.",
        );
      }
      return seen.response as Identity;
    }
    const identity = await create(tx);
    await tx.putIdempotencyRecord({
      accountId: key.accountId,
      operation: key.operation,
      clientToken,
      requestHash: hash,
      response: identity,
      createdAt: clock.now(),
    });
    return identity;
  });
}
