// Module loader hooks (they run on Node's loader thread): record each loaded
// module's URL, one a line, in the file LMVM_MODULE_TRACE names. CommonJS
// packages imported from ES modules (better-sqlite3, kysely's CJS build)
// pass through `load` too.

import { appendFileSync } from "node:fs";

type Next = (url: string, context: unknown) => Promise<unknown>;

export async function load(url: string, context: unknown, next: Next): Promise<unknown> {
  const file = process.env.LMVM_MODULE_TRACE;
  if (file) appendFileSync(file, `${url}\n`);
  return next(url, context);
}
