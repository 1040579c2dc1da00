// Loaded with `node --import` (through NODE_OPTIONS) into a process under test:
// records every module the process loads in the file LMVM_MODULE_TRACE names,
// one path or URL a line. ES modules (and CommonJS ones imported from them)
// come from the loader hooks in module-trace-hooks.ts; CommonJS modules that
// other CommonJS modules require() are added from require.cache at exit.

import { appendFileSync } from "node:fs";
import { createRequire, register } from "node:module";

register("./module-trace-hooks.js", import.meta.url);

const cache = createRequire(import.meta.url).cache;
process.on("exit", () => {
  const file = process.env.LMVM_MODULE_TRACE;
  if (file) appendFileSync(file, Object.keys(cache).map((p) => `${p}\n`).join(""));
});
