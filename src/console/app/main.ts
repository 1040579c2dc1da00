// lmvm's web console: plain TypeScript and the DOM. Views are chosen by the
// URL's hash (#overview, #images, #image/<name>, #microvms, #microvm/<id>),
// so the browser's back button and bookmarks work; every call goes through
// api.ts, signed with the signed-in key.

import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, CreateMicrovmShellAuthTokenCommand, GetMicrovmCommand, GetMicrovmImageCommand,
  GetMicrovmImageVersionCommand, ListManagedMicrovmImagesCommand, ListMicrovmImageBuildsCommand, ListMicrovmImagesCommand, ListMicrovmImageVersionsCommand,
  ListMicrovmsCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand, UpdateMicrovmImageCommand,
  type LambdaMicrovmsClient, type MicrovmItem, type MicrovmImageSummary,
} from "@aws-sdk/client-lambda-microvms";
import { callerIdentity, clearSession, followLog, LMVM_PREFIX, loadSession, metric, microvmsClient, saveSession, uploadZip, type Session } from "./api.js";
import { badge, barChart, h, table, when } from "./dom.js";
import { openShell, type ShellSession } from "./terminal.js";

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
const who = document.getElementById("who")!;
const status = document.getElementById("status")!;

const SHELL_INGRESS = (region: string) => `arn:aws:lambda:${region}:aws:network-connector:aws-network-connector:SHELL_INGRESS`;
const HTTP_INGRESS = (region: string) => `arn:aws:lambda:${region}:aws:network-connector:aws-network-connector:HTTP_INGRESS`;
const MICROVM_STATES = ["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED", "TERMINATING", "TERMINATED"];
/** A MicroVM's size when its image names none (src/core/limits.ts DEFAULT_MEMORY_MIB). */
const DEFAULT_MEMORY_MIB = 2048;

let session: Session | undefined;
let client: LambdaMicrovmsClient | undefined;
let account = "";
/** What the current view started (polls, log streams, a shell): stopped when the view changes. */
let teardown: (() => void)[] = [];
/** The session's failed calls, newest first, for the overview. */
const errors: { at: Date; what: string; message: string }[] = [];

function say(text: string, kind: "info" | "error" = "info"): void {
  status.textContent = text;
  status.className = kind;
  if (kind === "error") {
    errors.unshift({ at: new Date(), what: location.hash || "#overview", message: text });
    errors.length = Math.min(errors.length, 20);
  }
}

/** Runs an action, showing its failure (the AWS error type and message) in the status line. */
async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    const e = err as { name?: string; message?: string };
    say(`${what} failed: ${e.name && e.name !== "Error" ? `${e.name}: ` : ""}${e.message ?? String(err)}`, "error");
    return undefined;
  }
}

function every(ms: number, fn: () => Promise<void>): void {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = async () => {
    if (stopped) return;
    await fn().catch(() => undefined);
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  teardown.push(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

async function all<T>(page: (token?: string) => Promise<{ items?: T[]; nextToken?: string }>): Promise<T[]> {
  const out: T[] = [];
  let token: string | undefined;
  do {
    const r = await page(token);
    out.push(...(r.items ?? []));
    token = r.nextToken;
  } while (token && out.length < 2000);
  return out;
}

const listImages = () => all<MicrovmImageSummary>((t) => client!.send(new ListMicrovmImagesCommand({ ...(t ? { nextToken: t } : {}) })));
const listMicrovms = (imageIdentifier?: string) => all<MicrovmItem>((t) => client!.send(new ListMicrovmsCommand({ ...(imageIdentifier ? { imageIdentifier } : {}), ...(t ? { nextToken: t } : {}) })));
const imageName = (arn: string | undefined) => arn?.split(":").at(-1) ?? "";

// ---- sign-in ---------------------------------------------------------------

function signInView(): void {
  nav.hidden = true;
  who.textContent = "";
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to lmvm"),
    h("p", {}, "Use an access key of the server's account (the root key is in ", h("code", {}, "<data-dir>/credentials"), ") or of an IAM user. It is kept in this tab's session storage only."),
    h("label", { for: "access-key" }, "Access key ID"),
    h("input", { id: "access-key", name: "accessKeyId", required: true, autocomplete: "username", spellcheck: "false" }),
    h("label", { for: "secret-key" }, "Secret access key"),
    h("input", { id: "secret-key", name: "secretAccessKey", type: "password", required: true, autocomplete: "current-password" }),
    h("label", { for: "session-token" }, "Session token (temporary credentials only)"),
    h("input", { id: "session-token", name: "sessionToken", autocomplete: "off" }),
    h("label", { for: "region" }, "Region"),
    h("input", { id: "region", name: "region", value: "us-east-1", required: true }),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const s: Session = { accessKeyId: String(data.get("accessKeyId")).trim(), secretAccessKey: String(data.get("secretAccessKey")).trim(), region: String(data.get("region")).trim() || "us-east-1" };
    const token = String(data.get("sessionToken") ?? "").trim();
    if (token) s.sessionToken = token;
    say("Signing in…");
    const id = await attempt("Sign-in", () => callerIdentity(s));
    if (!id) return;
    saveSession(s);
    start(s, id);
    location.hash = "#overview";
    route();
  });
  main.replaceChildren(form);
  (form.querySelector("#access-key") as HTMLInputElement).focus();
}

function start(s: Session, id: { arn: string; account: string }): void {
  session = s;
  client = microvmsClient(s);
  account = id.account;
  nav.hidden = false;
  who.textContent = `${id.arn} · ${s.region}`;
  say(`Signed in as ${id.arn}.`);
}

function signOut(): void {
  stopView();
  clearSession();
  client?.destroy();
  session = undefined;
  client = undefined;
  history.replaceState(null, "", "#");
  say("Signed out.");
  signInView();
}

// ---- overview --------------------------------------------------------------

async function overviewView(): Promise<void> {
  const body = h("div", { class: "grid" });
  main.replaceChildren(h("h1", {}, "Overview"), body);
  const draw = async () => {
    const [vms, images, builds] = await Promise.all([listMicrovms(), listImages(), metric("lmvm_builds")]);
    const counts = MICROVM_STATES.map((s) => [s, vms.filter((v) => v.state === s).length] as [string, number]);
    // Memory of the MicroVMs the quota counts (README "Quotas and rate limits"): each version's baseline size.
    const sizes = new Map<string, number>();
    for (const v of vms.filter((v) => ["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED"].includes(v.state ?? ""))) {
      const key = `${v.imageArn}:${v.imageVersion}`;
      if (!sizes.has(key)) {
        const ver = await client!.send(new GetMicrovmImageVersionCommand({ imageIdentifier: v.imageArn, imageVersion: v.imageVersion })).catch(() => undefined);
        sizes.set(key, ver?.resources?.[0]?.minimumMemoryInMiB ?? DEFAULT_MEMORY_MIB);
      }
    }
    const held = vms.filter((v) => ["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED"].includes(v.state ?? ""));
    const memory = held.reduce((n, v) => n + (sizes.get(`${v.imageArn}:${v.imageVersion}`) ?? 0), 0);
    const buildCounts = ["PENDING", "IN_PROGRESS", "SUCCESSFUL", "FAILED"].map((s) => [s, builds.get(`state="${s}"`) ?? 0] as [string, number]);
    const failed = images.filter((i) => i.latestFailedImageVersion);
    const reasons = await Promise.all(failed.slice(0, 10).map(async (i) =>
      [i.name ?? "", i.latestFailedImageVersion ?? "", (await client!.send(new GetMicrovmImageVersionCommand({ imageIdentifier: i.imageArn, imageVersion: i.latestFailedImageVersion })).catch(() => undefined))?.stateReason ?? ""] as const));
    body.replaceChildren(
      h("section", { class: "card", "aria-labelledby": "ov-vms" }, h("h2", { id: "ov-vms" }, `MicroVMs by state (${vms.length})`), barChart("MicroVMs by state", counts)),
      h("section", { class: "card", "aria-labelledby": "ov-builds" }, h("h2", { id: "ov-builds" }, "Builds by state"), barChart("Builds by state", buildCounts)),
      h("section", { class: "card", "aria-labelledby": "ov-cap" }, h("h2", { id: "ov-cap" }, "Capacity used"),
        h("p", { class: "big" }, `${memory.toLocaleString()} MiB`),
        h("p", {}, `memory of ${held.length} MicroVM${held.length === 1 ? "" : "s"} (pending, running, suspending or suspended), as the `, h("code", {}, "microvm-memory-mib"), " quota counts it; ",
          `${images.length} image${images.length === 1 ? "" : "s"}.`)),
      h("section", { class: "card wide", "aria-labelledby": "ov-err" }, h("h2", { id: "ov-err" }, "Recent errors"),
        table("Image versions that failed", ["Image", "Version", "Reason"], reasons.map(([n, v, r]) => [h("a", { href: `#image/${encodeURIComponent(n)}` }, n), v, r])),
        table("This session's failed calls", ["When", "Where", "Error"], errors.map((e) => [when(e.at), e.what, e.message]))),
    );
  };
  await attempt("Loading the overview", draw);
  every(5000, draw);
}

// ---- images ----------------------------------------------------------------

/** The create/update form: a zip, a base image and the image's settings (the JSON of microvm-image.json). */
function imageForm(mode: "create" | "update", name?: string): HTMLFormElement {
  const id = (s: string) => `${mode}-${s}`;
  const base = h("select", { id: id("base"), name: "base" });
  void attempt("Listing base images", async () => {
    const managed = await all<{ imageArn?: string }>((t) => client!.send(new ListManagedMicrovmImagesCommand({ ...(t ? { nextToken: t } : {}) })));
    base.replaceChildren(...managed.map((m) => h("option", { value: m.imageArn ?? "", ...(m.imageArn?.endsWith(":debian12") ? { selected: true } : {}) }, imageName(m.imageArn))));
  });
  const form = h("form", { class: "card", "aria-labelledby": id("title") },
    h("h2", { id: id("title") }, mode === "create" ? "Create an image" : `New version of ${name}`),
    mode === "create" ? h("label", { for: id("name") }, "Name") : null,
    mode === "create" ? h("input", { id: id("name"), name: "name", required: true, pattern: "[a-zA-Z0-9][a-zA-Z0-9_\\-]{0,63}" }) : null,
    h("label", { for: id("zip") }, "Code (a .zip with the Dockerfile at its root)"),
    h("input", { id: id("zip"), name: "zip", type: "file", accept: ".zip,application/zip", required: true }),
    h("label", { for: id("base") }, "Base image"), base,
    h("label", { for: id("role") }, "Build role ARN"),
    h("input", { id: id("role"), name: "role", required: true, value: `arn:aws:iam::${account}:role/MicroVMBuildRole` }),
    h("label", { for: id("settings") }, "Settings: JSON as in microvm-image.json (hooks, resources, environmentVariables…), optional"),
    h("textarea", { id: id("settings"), name: "settings", rows: "5", spellcheck: "false", placeholder: '{"hooks": {"port": 9000, "microvmImageHooks": {"ready": "ENABLED"}}}' }),
    h("button", { type: "submit" }, mode === "create" ? "Upload and build" : "Upload and build a new version"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const file = data.get("zip") as File | null;
    const target = mode === "create" ? String(data.get("name")).trim() : name!;
    const text = String(data.get("settings") ?? "").trim();
    let settings: Record<string, unknown> = {};
    if (text) {
      try {
        settings = JSON.parse(text) as Record<string, unknown>;
      } catch (err) {
        return say(`The settings are not valid JSON: ${(err as Error).message}`, "error");
      }
    }
    if (!file) return say("Choose a zip to upload.", "error");
    say(`Uploading ${file.name} (${file.size.toLocaleString()} bytes)…`);
    const uri = await attempt("The upload", async () => uploadZip(session!, target, new Uint8Array(await file.arrayBuffer())));
    if (!uri) return;
    const request = { ...settings, baseImageArn: String(data.get("base")), buildRoleArn: String(data.get("role")).trim(), codeArtifact: { uri } };
    const done = await attempt(mode === "create" ? "CreateMicrovmImage" : "UpdateMicrovmImage", () =>
      mode === "create"
        ? client!.send(new CreateMicrovmImageCommand({ ...request, name: target } as never))
        : client!.send(new UpdateMicrovmImageCommand({ ...request, imageIdentifier: target } as never)));
    if (!done) return;
    say(`Building ${target}: its build log follows below.`);
    location.hash = `#image/${encodeURIComponent(target)}`;
  });
  return form;
}

async function imagesView(): Promise<void> {
  const list = h("div", {});
  main.replaceChildren(h("h1", {}, "Images"), list, imageForm("create"));
  const draw = async () => {
    const images = await listImages();
    list.replaceChildren(table("Images", ["Name", "State", "Latest active version", "Latest failed version", "Created"],
      images.map((i) => [h("a", { href: `#image/${encodeURIComponent(i.name ?? "")}` }, i.name ?? ""), badge(i.state), i.latestActiveImageVersion ?? "", i.latestFailedImageVersion ?? "", when(i.createdAt)]), "none yet: create one below."));
  };
  await attempt("Listing images", draw);
  every(5000, draw);
}

/** How much of a followed log the page keeps. */
const LOG_VIEW_CHARS = 512 * 1024;

function logPanel(title: string, path: string): HTMLElement {
  const pre = h("pre", { class: "log", tabindex: "0", role: "log", "aria-live": "off", "aria-label": title });
  const state = h("p", { class: "log-state" }, "Following…");
  const ctl = new AbortController();
  teardown.push(() => ctl.abort());
  const trimmed = h("p", { class: "log-state", hidden: "" }, `Earlier output is not shown: the page keeps the last ${LOG_VIEW_CHARS / 1024} KiB (the whole log is in CloudWatch Logs' GetLogEvents).`);
  let pending = "";
  let shown = 0;
  let scheduled = false;
  followLog(session!, path, (text) => {
    pending += text;
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(pending);
      shown += pending.length;
      pending = "";
      // A MicroVM's output can run for days: only the newest LOG_VIEW_CHARS stay on the page.
      while (shown > LOG_VIEW_CHARS && pre.firstChild) {
        shown -= pre.firstChild.textContent?.length ?? 0;
        pre.firstChild.remove();
        trimmed.hidden = false;
      }
      scheduled = false;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
  }, ctl.signal).then(() => { if (!ctl.signal.aborted) state.textContent = "The log has ended."; }, (err: Error) => { state.textContent = `The log could not be read: ${err.message}`; });
  return h("section", { class: "card wide", "aria-label": title }, h("h3", {}, title), state, trimmed, pre);
}

async function imageView(name: string): Promise<void> {
  const head = h("div", {});
  const versions = h("div", {});
  const logs = h("div", {});
  const runForm = h("form", { class: "card", "aria-labelledby": "run-title" },
    h("h2", { id: "run-title" }, "Run a MicroVM"),
    h("label", { for: "run-version" }, "Version"),
    h("input", { id: "run-version", name: "version", placeholder: "the latest active one" }),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "shell", checked: true }), " Shell in the browser (SHELL_INGRESS)"),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "http", checked: true }), " HTTPS endpoint (HTTP_INGRESS)"),
    h("button", { type: "submit" }, "Run"));
  runForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(runForm);
    const ingress = [...(data.get("http") ? [HTTP_INGRESS(session!.region)] : []), ...(data.get("shell") ? [SHELL_INGRESS(session!.region)] : [])];
    const version = String(data.get("version") ?? "").trim();
    // RunMicrovm names the image by its ARN (the service refuses a bare name).
    const vm = await attempt("RunMicrovm", () => client!.send(new RunMicrovmCommand({ imageIdentifier: imageArn || name, ...(version ? { imageVersion: version } : {}), ...(ingress.length ? { ingressNetworkConnectors: ingress } : {}) })));
    if (vm) location.hash = `#microvm/${vm.microvmId}`;
  });
  main.replaceChildren(h("p", {}, h("a", { href: "#images" }, "← Images")), head, versions, logs, h("div", { class: "grid" }, runForm, imageForm("update", name)));
  const followed = new Set<string>();
  let imageArn = "";
  const draw = async () => {
    const image = await client!.send(new GetMicrovmImageCommand({ imageIdentifier: name }));
    imageArn = image.imageArn ?? "";
    head.replaceChildren(h("h1", {}, name, " ", badge(image.state)), h("p", { class: "muted" }, image.imageArn ?? ""));
    const vs = await all<{ imageVersion?: string; state?: string; status?: string; stateReason?: string; createdAt?: Date; codeArtifact?: { uri?: string } }>((t) => client!.send(new ListMicrovmImageVersionsCommand({ imageIdentifier: name, ...(t ? { nextToken: t } : {}) })));
    const rows = [];
    for (const v of vs) {
      const builds = (await client!.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: v.imageVersion }))).items ?? [];
      for (const b of builds) {
        const live = b.buildState === "PENDING" || b.buildState === "IN_PROGRESS";
        // The newest version's build log follows live; older ones open on demand.
        if (b.buildId && !followed.has(b.buildId) && (live || v === vs.at(-1))) {
          followed.add(b.buildId);
          logs.prepend(logPanel(`Build log of version ${v.imageVersion} (${b.buildId})`, `${LMVM_PREFIX}/microvm-images/${encodeURIComponent(name)}/versions/${v.imageVersion}/builds/${b.buildId}/logs`));
        }
      }
      const build = builds[0];
      rows.push([v.imageVersion ?? "", badge(v.state), v.status ? badge(v.status) : "", v.stateReason ?? "", build ? h("span", {}, badge(build.buildState), " ", build.buildId ?? "", build.stateReason ? ` — ${build.stateReason}` : "") : "", when(v.createdAt)]);
    }
    versions.replaceChildren(table("Versions", ["Version", "State", "Status", "Reason", "Build", "Created"], rows.reverse()));
  };
  await attempt(`Loading image ${name}`, draw);
  every(3000, draw);
}

// ---- MicroVMs --------------------------------------------------------------

async function microvmsView(): Promise<void> {
  const image = h("input", { id: "f-image", name: "image", placeholder: "any" });
  const state = h("select", { id: "f-state", name: "state" }, h("option", { value: "" }, "any"), ...MICROVM_STATES.map((s) => h("option", { value: s }, s)));
  const text = h("input", { id: "f-id", name: "id", placeholder: "part of an id" });
  const list = h("div", {});
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter MicroVMs" },
    h("label", { for: "f-image" }, "Image"), image, h("label", { for: "f-state" }, "State"), state, h("label", { for: "f-id" }, "ID contains"), text);
  const draw = async () => {
    // ListMicrovms filters by the image's ARN; a bare name is made into one.
    const wanted = image.value.trim();
    const vms = (await listMicrovms(!wanted ? undefined : wanted.startsWith("arn:") ? wanted : `arn:aws:lambda:${session!.region}:${account}:microvm-image:${wanted}`))
      .filter((v) => !state.value || v.state === state.value)
      .filter((v) => !text.value.trim() || (v.microvmId ?? "").includes(text.value.trim()));
    list.replaceChildren(table("MicroVMs", ["ID", "State", "Image", "Version", "Started"],
      vms.map((v) => [h("a", { href: `#microvm/${v.microvmId}` }, v.microvmId ?? ""), badge(v.state), imageName(v.imageArn), v.imageVersion ?? "", when(v.startedAt)]), "none match."));
  };
  filters.addEventListener("input", () => void attempt("Listing MicroVMs", draw));
  filters.addEventListener("submit", (ev) => ev.preventDefault());
  main.replaceChildren(h("h1", {}, "MicroVMs"), filters, list);
  await attempt("Listing MicroVMs", draw);
  every(3000, draw);
}

async function microvmView(id: string): Promise<void> {
  const head = h("div", {});
  const details = h("dl", { class: "details" });
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Actions" });
  const tokenOut = h("div", {});
  const shellHost = h("div", { class: "terminal", "aria-label": "Terminal" });
  const shellState = h("p", { class: "muted" });
  let shell: ShellSession | undefined;
  teardown.push(() => shell?.close());
  let current: Awaited<ReturnType<typeof getVm>> | undefined;
  const getVm = () => client!.send(new GetMicrovmCommand({ microvmIdentifier: id }));
  const act = (label: string, fn: () => Promise<unknown>) => h("button", { type: "button", onclick: async () => {
    say(`${label}…`);
    if ((await attempt(label, fn)) !== undefined) say(`${label}: requested.`);
    await attempt("Refreshing", draw);
  } }, label);
  const openTerminal = h("button", { type: "button", onclick: async () => {
    shell?.close();
    const t = await attempt("CreateMicrovmShellAuthToken", () => client!.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 10 })));
    const token = t?.authToken?.["X-aws-proxy-auth"];
    if (!token || !current?.endpoint) return;
    shellState.textContent = "Shell open: type into the terminal; `exit` ends it.";
    shell = openShell(shellHost, current.endpoint, token, (reason) => { shellState.textContent = reason; });
  } }, "Open terminal");
  const mint = h("button", { type: "button", onclick: async () => {
    const t = await attempt("CreateMicrovmAuthToken", () => client!.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 60, allowedPorts: [{ port: 8080 }] })));
    const token = t?.authToken?.["X-aws-proxy-auth"];
    if (!token || !current?.endpoint) return;
    const port = new URL(current.endpoint).port;
    const curl = `curl --cacert <data-dir>/tls/ca.pem --connect-to ::127.0.0.1:${port || 443} -H 'X-aws-proxy-auth: ${token}' '${current.endpoint}/'`;
    const area = h("textarea", { id: "curl", readonly: true, rows: "4", spellcheck: "false" });
    area.value = curl;
    const copy = h("button", { type: "button", onclick: async () => {
      area.select();
      await navigator.clipboard?.writeText(curl).then(() => say("Copied the curl command."), () => say("Select the text and copy it (the clipboard was refused)."));
    } }, "Copy");
    tokenOut.replaceChildren(h("label", { for: "curl" }, "A token for port 8080, valid 60 minutes, in a ready curl command"), area, copy);
  } }, "Mint a token (curl)");
  const draw = async () => {
    const vm = await getVm();
    current = vm;
    head.replaceChildren(h("h1", {}, "MicroVM ", h("code", {}, id), " ", badge(vm.state)));
    const row = (k: string, v: Node | string) => [h("dt", {}, k), h("dd", {}, v)];
    details.replaceChildren(...[
      ...row("State", h("span", { id: "vm-state" }, vm.state ?? "")),
      ...row("Reason", vm.stateReason ?? "—"),
      ...row("Endpoint", vm.endpoint ?? "—"),
      ...row("Image", h("a", { href: `#image/${encodeURIComponent(imageName(vm.imageArn))}` }, `${imageName(vm.imageArn)} version ${vm.imageVersion}`)),
      ...row("Started", when(vm.startedAt)),
      ...row("Ingress", (vm.ingressNetworkConnectors ?? []).map((c) => c.split(":").at(-1)).join(", ") || "—"),
      ...row("Egress", (vm.egressNetworkConnectors ?? []).map((c) => c.split(":").at(-1)).join(", ") || "—"),
    ]);
    const live = vm.state !== "TERMINATED" && vm.state !== "TERMINATING";
    const shellable = (vm.ingressNetworkConnectors ?? []).some((c) => c.endsWith(":SHELL_INGRESS") || c.endsWith(":ALL_INGRESS"));
    (openTerminal as HTMLButtonElement).disabled = !(shellable && vm.state === "RUNNING");
    (openTerminal as HTMLButtonElement).title = shellable ? "" : "Run the MicroVM with SHELL_INGRESS to get a shell.";
    (mint as HTMLButtonElement).disabled = !live;
    for (const b of actions.querySelectorAll<HTMLButtonElement>("button[data-when]")) b.disabled = !b.dataset.when!.split(",").includes(vm.state ?? "");
  };
  const suspend = act("Suspend", () => client!.send(new SuspendMicrovmCommand({ microvmIdentifier: id })));
  suspend.dataset.when = "RUNNING";
  const resume = act("Resume", () => client!.send(new ResumeMicrovmCommand({ microvmIdentifier: id })));
  resume.dataset.when = "SUSPENDED";
  const terminate = act("Terminate", async () => {
    if (!confirm(`Terminate MicroVM ${id}? It cannot be started again.`)) return undefined;
    return client!.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });
  terminate.dataset.when = "PENDING,RUNNING,SUSPENDING,SUSPENDED";
  actions.append(suspend, resume, terminate, mint, openTerminal);
  main.replaceChildren(h("p", {}, h("a", { href: "#microvms" }, "← MicroVMs")), head, details, actions, tokenOut,
    h("section", { class: "card wide", "aria-labelledby": "term-title" }, h("h2", { id: "term-title" }, "Terminal"), shellState, shellHost),
    logPanel("App output (stdout and stderr)", `${LMVM_PREFIX}/microvms/${encodeURIComponent(id)}/logs`));
  await attempt(`Loading MicroVM ${id}`, draw);
  every(2000, draw);
}

// ---- routing ---------------------------------------------------------------

function stopView(): void {
  for (const t of teardown) t();
  teardown = [];
}

function route(): void {
  stopView();
  if (status.className !== "error") say("");
  if (!client) return signInView();
  const [view, arg] = (location.hash.replace(/^#/, "") || "overview").split("/");
  for (const a of nav.querySelectorAll("a")) a.toggleAttribute("aria-current", a.getAttribute("href") === `#${view === "image" ? "images" : view === "microvm" ? "microvms" : view}`);
  const name = decodeURIComponent(arg ?? "");
  void (view === "images" ? imagesView() : view === "image" ? imageView(name) : view === "microvms" ? microvmsView() : view === "microvm" ? microvmView(name) : overviewView());
  main.focus({ preventScroll: true });
}

document.getElementById("signout")!.addEventListener("click", signOut);
window.addEventListener("hashchange", route);

const saved = loadSession();
if (saved) {
  void callerIdentity(saved).then((id) => { start(saved, id); route(); }, () => { clearSession(); route(); });
} else route();
