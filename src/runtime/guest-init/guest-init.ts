// lmvm-init (init.c beside this file), PID 1 of every sandbox: it runs the
// image's command as its child and relays HOOK_RELAY_PORT to the app's hooks
// port on 127.0.0.1, so hook calls reach the app from 127.0.0.1 as on AWS.
// `npm run build` (scripts/build-guest-init.sh) compiles it, static, next to
// this module's compiled file; it is bind-mounted read-only into each sandbox.
// A checkpoint records the mount, so a restore needs the binary at the same
// place in the sandbox (GUEST_PATH); its host path may move.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { HOOK_RELAY_PORT } from "../../core/index.js";

/** Where the compiled binary is on the host. */
export const GUEST_INIT_BINARY = fileURLToPath(new URL("./lmvm-init", import.meta.url));

/** Where it appears inside every sandbox. */
export const GUEST_PATH = "/.lmvm-init";

/** The OCI mount that puts lmvm-init in a sandbox. */
export function guestInitMount(): { destination: string; type: string; source: string; options: string[] } {
  if (!existsSync(GUEST_INIT_BINARY)) throw new Error(`${GUEST_INIT_BINARY} is missing: build it with npm run build (it needs gcc and libc6-dev; scripts/install.sh installs them)`);
  return { destination: GUEST_PATH, type: "bind", source: GUEST_INIT_BINARY, options: ["rbind", "ro"] };
}

/** The sandbox's process args: lmvm-init, then the image's command. `hooksPort` 0: no relay. */
export function underGuestInit(command: string[], hooksPort: number): string[] {
  return [GUEST_PATH, String(HOOK_RELAY_PORT), String(hooksPort), ...command];
}
