// The web console in real Chromium (Debian's, driven by playwright-core):
// sign in, upload examples/python as a zip and watch its build's log follow to
// the end, run a MicroVM with SHELL_INGRESS, type into its terminal and read
// the output, resize, exit; suspend, resume; then a new version of the same
// image from examples/hello (Node) through the console's update form, run and
// its terminal too; terminate; sign out. One `lmvm server`, one image, two
// builds. The screenshot it takes is the README's (docs/console.png).
// The upload route's refusals (unsigned, not a zip) are checked beside it.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createHash } from "node:crypto";
import { readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { makeZip } from "../support/artifacts.js";
import { within } from "../support/deadline.js";
import { readCredentials, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { signedFetch } from "../support/signed-fetch.js";

const ROOT = join(import.meta.dirname, "..", "..", "..");
const EXAMPLES = join(ROOT, "examples");
const SCREENSHOT = join(ROOT, "docs", "console.png");
const BUILD_MS = 6 * 60_000;
const STEP_MS = 60_000;

let server: ServerProcess;
let dataDir: string;
let browser: Browser;
let page: Page;
let creds: { accessKeyId: string; secretAccessKey: string };
const zips: Record<string, string> = {};

/** The example's files as a zip on disk, for the page's file input. */
function exampleZip(name: string): string {
  const dir = join(EXAMPLES, name);
  const zip = makeZip(readdirSync(dir).map((f) => ({ name: f, content: readFileSync(join(dir, f), "utf8") })));
  const path = join(dataDir, `${name}.zip`);
  writeFileSync(path, zip);
  return path;
}

/** Settings for the form: the example's microvm-image.json without what the form asks for itself. */
function settingsOf(name: string): string {
  const { baseImageArn: _base, ...rest } = JSON.parse(readFileSync(join(EXAMPLES, name, "microvm-image.json"), "utf8")) as Record<string, unknown>;
  return JSON.stringify(rest);
}

/** SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's --ignore-certificate-errors-spki-list takes it. */
function spkiHash(pemFile: string): string {
  const der = new X509Certificate(readFileSync(pemFile)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64");
}

/** The terminal's visible text (xterm.js's DOM renderer: one row per element). */
const terminalText = () => page.locator(".xterm-rows").innerText();

async function waitForTerminal(pattern: RegExp, what: string): Promise<string> {
  let text = "";
  let gaveUp = false;
  await within(STEP_MS, what, (async () => {
    while (!gaveUp) {
      text = await terminalText().catch(() => "");
      if (pattern.test(text)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  })()).catch((err: Error) => {
    gaveUp = true;
    throw new Error(`${err.message}; the terminal shows:\n${text}`);
  });
  return text;
}

async function vmState(state: string): Promise<void> {
  await page.locator("#vm-state", { hasText: new RegExp(`^${state}$`) }).waitFor({ timeout: STEP_MS });
}

/** Runs the image's latest version from its page with a shell, then opens the terminal and types into it. */
async function runAndShell(image: string, command: string, expected: RegExp): Promise<string> {
  await page.goto(`${server.url}/console/#image/${image}`);
  await page.getByRole("button", { name: "Run", exact: true }).click();
  await page.waitForURL(/#microvm\/[^/]+$/, { timeout: STEP_MS, waitUntil: "commit" }).catch(async (err: Error) => {
    throw new Error(`${err.message}; the console says: ${await page.locator("#status").innerText()}`);
  });
  const id = new URL(page.url()).hash.split("/")[1]!;
  await vmState("RUNNING");
  await page.getByRole("button", { name: "Open terminal" }).click();
  await page.locator(".xterm-rows").waitFor({ timeout: STEP_MS });
  await page.getByText("Shell open", { exact: false }).waitFor({ timeout: STEP_MS });
  await waitForTerminal(/[#$][\s\u00a0]*$/m, "the shell's prompt");
  await page.keyboard.type(`${command}\n`);
  await waitForTerminal(expected, `the output of '${command}'`);
  return id;
}

before(async () => {
  dataDir = tempDir("lmvm-console-");
  server = await spawnServer(dataDir, { builds: true });
  creds = readCredentials(dataDir);
  zips.python = exampleZip("python");
  zips.hello = exampleZip("hello");
  const tls = join(dataDir, "tls");
  // Trust lmvm's CA for the MicroVMs' HTTPS endpoints (the shell's wss://), as a user imports ca.pem.
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", `--ignore-certificate-errors-spki-list=${spkiHash(join(tls, "ca.pem"))},${spkiHash(join(tls, "server.pem"))}`],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(STEP_MS);
  page.on("dialog", (d) => void d.accept());
});

after(async () => {
  // What the page showed when a step failed (a test that passed has already taken docs/console.png).
  if (page) await page.screenshot({ path: join(dataDir, "..", "lmvm-console-last.png") }).catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await server?.kill();
  if (dataDir) {
    await freeSandboxes(dataDir); // a MicroVM a failed step left running holds mounts under the data directory
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("the upload route refuses unsigned requests and bodies that are not zips", async () => {
  const unsigned = await fetch(`${server.url}/lmvm/2025-09-09/uploads?imageName=x`, { method: "PUT", body: readFileSync(zips.python!) });
  assert.equal(unsigned.status, 403, await unsigned.text());
  const undeclared = await signedFetch(server.url, creds, "PUT", "/lmvm/2025-09-09/uploads?imageName=x", "PK\x03\x04", { omitPayloadHash: true });
  assert.equal(undeclared.errorType, "ValidationException", "a signed upload without its hash declared is refused before its body is read");
  assert.match(String(undeclared.body.message), /x-amz-content-sha256/);
  const forged = await signedFetch(server.url, creds, "PUT", "/lmvm/2025-09-09/uploads?imageName=x", "PK\x03\x04", { tamperedBody: "PK\x03\x04 and more" });
  assert.equal(forged.status, 403, "a body other than the declared one is refused");
  const notZip = await signedFetch(server.url, creds, "PUT", "/lmvm/2025-09-09/uploads?imageName=x", "just text");
  assert.equal(notZip.status, 400);
  assert.equal(notZip.errorType, "ValidationException");
  assert.match(String(notZip.body.message), /not a zip archive/);
  const badName = await signedFetch(server.url, creds, "PUT", "/lmvm/2025-09-09/uploads?imageName=no%20spaces", "PK\x03\x04");
  assert.equal(badName.errorType, "ValidationException");
  assert.match(String(badName.body.message), /imageName/);
  const page404 = await fetch(`${server.url}/console/nothing.js`);
  assert.equal(page404.status, 404);
  const js = await fetch(`${server.url}/console/app.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type") ?? "", /^text\/javascript/);
});

test("the console: sign in, build from a zip, run, terminal, suspend, resume, update to a Node version, sign out", async () => {
  await page.goto(`${server.url}/console/`);
  // A wrong secret is refused with the API's reason, and nothing is kept.
  await page.getByLabel("Access key ID").fill(creds.accessKeyId);
  await page.getByLabel("Secret access key").fill("wrong-secret");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#status.error", { hasText: /Sign-in failed/ }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.getByLabel("Secret access key").fill(creds.secretAccessKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.getByRole("heading", { name: /MicroVMs by state/ }).waitFor();

  // Images: upload examples/python and follow the build to its end.
  await page.getByRole("link", { name: "Images", exact: true }).click();
  await page.getByRole("heading", { name: "Create an image" }).waitFor();
  await page.locator("#create-base option", { hasText: "debian12" }).waitFor({ state: "attached" });
  await page.getByLabel("Name").fill("console-app");
  await page.getByLabel(/^Code/).setInputFiles(zips.python!);
  await page.getByLabel(/^Settings/).first().fill(settingsOf("python"));
  await page.getByRole("button", { name: "Upload and build" }).click();
  await page.waitForURL(/#image\/console-app$/, { waitUntil: "commit" });
  const log = page.getByRole("log").first();
  await log.waitFor();
  await page.getByText("The log has ended.").first().waitFor({ timeout: BUILD_MS });
  assert.match(await log.innerText(), /STEP|COPY|snapshot/i, "the build's log was shown");
  await page.locator("table", { hasText: "Versions" }).locator(".badge", { hasText: "SUCCESSFUL" }).first().waitFor({ timeout: STEP_MS });

  // A MicroVM with a shell: type, see the output, resize took effect, exit.
  const vm = await runAndShell("console-app", "echo console-$((6*7)); python3 --version", /console-42[\s\S]*Python 3\.\d+/);
  await page.keyboard.type("stty size\n");
  const size = await waitForTerminal(/^\d+ \d+\s*$/m, "stty size");
  const [rows, cols] = /^(\d+) (\d+)\s*$/m.exec(size)!.slice(1).map(Number);
  assert.equal(rows, 24);
  assert.ok(cols! > 80, `the terminal was resized to the page's width (stty size says ${rows} ${cols})`);
  await page.screenshot({ path: SCREENSHOT });
  await page.keyboard.type("exit\n");
  await page.getByText("The shell exited.").first().waitFor();

  // The endpoint's token as a ready curl command.
  await page.getByRole("button", { name: "Mint a token (curl)" }).click();
  const curl = await page.locator("#curl").inputValue();
  assert.match(curl, new RegExp(`^curl .*-H 'X-aws-proxy-auth: [\\w.-]+' 'https://${vm}\\.`));

  // Suspend and resume from the page.
  await page.getByRole("button", { name: "Suspend" }).click();
  await vmState("SUSPENDED");
  await page.getByRole("button", { name: "Resume" }).click();
  await vmState("RUNNING");
  await page.getByRole("button", { name: "Terminate" }).click();
  await vmState("TERMINAT(ING|ED)");

  // A new version of the image from examples/hello (Node), through the update form; its MicroVM's shell.
  await page.goto(`${server.url}/console/#image/console-app`);
  await page.locator("#update-zip").waitFor();
  await page.locator("#update-base option", { hasText: "debian12" }).waitFor({ state: "attached" });
  await page.locator("#update-zip").setInputFiles(zips.hello!);
  await page.locator("#update-settings").fill(settingsOf("hello"));
  await page.getByRole("button", { name: "Upload and build a new version" }).click();
  await page.getByText(/Build log of version 2/).waitFor();
  await within(BUILD_MS, "version 2 to build", page.locator("table", { hasText: "Versions" }).locator("tr", { hasText: /^\s*2/ }).locator(".badge", { hasText: "SUCCESSFUL" }).first().waitFor({ timeout: BUILD_MS }));
  await runAndShell("console-app", "echo node-$((6*7)) && node --version", /node-42[\s\S]*v\d+\.\d+/);
  await page.getByRole("button", { name: "Terminate" }).click();
  await vmState("TERMINAT(ING|ED)");

  // The MicroVMs list and its filter.
  await page.getByRole("link", { name: "MicroVMs", exact: true }).click();
  await page.getByRole("link", { name: vm }).waitFor();
  await page.getByLabel("Image", { exact: true }).fill("console-app");
  await page.locator("#f-state").selectOption("TERMINATED");
  await page.getByRole("link", { name: vm }).waitFor();
  await page.getByLabel("ID contains").fill("no-such-id");
  await page.getByText("MicroVMs: none match.").waitFor();

  // Sign out: the key is gone from the tab.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to lmvm" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
});
