// Bundles the web console (src/console/app, browser TypeScript) with esbuild
// into dist/console/, beside its static files and xterm.js's stylesheet, so
// `lmvm server` serves it with nothing fetched from elsewhere. Run by
// `npm run build` after tsc (which type-checks the same sources).

import { copyFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { build } from "esbuild";

const root = join(import.meta.dirname, "..", "..");
const out = join(root, "dist", "console");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(root, "src", "console", "app", "main.ts")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  outfile: join(out, "app.js"),
  logLevel: "warning",
  legalComments: "linked",
});
for (const f of ["index.html", "console.css"]) copyFileSync(join(root, "src", "console", "static", f), join(out, f));
const xterm = dirname(createRequire(import.meta.url).resolve("@xterm/xterm/package.json"));
copyFileSync(join(xterm, "css", "xterm.css"), join(out, "xterm.css"));
