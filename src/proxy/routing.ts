// Where a request to a MicroVM endpoint goes, decided from its headers alone:
// which MicroVM (the Host's first label, else the token's MicroVM), which
// token (X-aws-proxy-auth, or for WebSockets the subprotocol entry
// lambda-microvms.authentication.<token>), which port (X-aws-proxy-port, then
// the subprotocol entry lambda-microvms.port.<n>, then 8080), whether the app
// is reached over cleartext HTTP/2 (X-aws-proxy-force-h2: true), and which of
// the client's headers the app gets (none of the X-aws-proxy-* namespace).
// As https://docs.aws.amazon.com/lambda/latest/dg/microvms-networking.html says.

import type { IncomingHttpHeaders } from "node:http";

export const AUTH_HEADER = "x-aws-proxy-auth";
export const PORT_HEADER = "x-aws-proxy-port";
export const FORCE_H2_HEADER = "x-aws-proxy-force-h2";
/** Every header whose name starts so is the platform's: none reaches the app. */
export const RESERVED_HEADER_PREFIX = "x-aws-proxy-";
/** WebSocket subprotocol entries (browsers cannot set headers on a WebSocket): the base marks the others as the platform's. */
export const BASE_SUBPROTOCOL = "lambda-microvms";
export const PORT_SUBPROTOCOL = "lambda-microvms.port.";
export const AUTH_SUBPROTOCOL = "lambda-microvms.authentication.";
export const DEFAULT_APP_PORT = 8080;

/** The MicroVM a Host header names under `domain`, if it does. */
export function microvmFromHost(host: string | undefined, domain: string): string | undefined {
  if (!host) return undefined;
  const name = host.replace(/:\d+$/, "").toLowerCase();
  const suffix = `.${domain.toLowerCase()}`;
  if (!name.endsWith(suffix)) return undefined;
  const label = name.slice(0, -suffix.length);
  return /^microvm-[0-9a-f]+$/.test(label) ? label : undefined;
}

export function subprotocols(headers: IncomingHttpHeaders): string[] {
  const raw = headers["sec-websocket-protocol"];
  return (Array.isArray(raw) ? raw.join(",") : raw ?? "").split(",").map((s) => s.trim()).filter(Boolean);
}

/** A WebSocket's subprotocol list, split into the platform's entries and the app's. */
export interface OfferedSubprotocols {
  /** `lambda-microvms` and its `lambda-microvms.*` entries: never sent to the app. */
  ours: string[];
  /** The app's own, in the client's order. */
  theirs: string[];
  token?: string;
  port?: string;
}

/** Splits the offered subprotocols; throws a message saying what is wrong when lmvm's entries are malformed (a 400). */
export function platformSubprotocols(headers: IncomingHttpHeaders): OfferedSubprotocols {
  const offered = subprotocols(headers);
  const ours = offered.filter((p) => p === BASE_SUBPROTOCOL || p.startsWith(`${BASE_SUBPROTOCOL}.`));
  const theirs = offered.filter((p) => !ours.includes(p));
  const out: OfferedSubprotocols = { ours, theirs };
  for (const p of ours) {
    if (p === BASE_SUBPROTOCOL) continue;
    const [field, prefix] = p.startsWith(AUTH_SUBPROTOCOL) ? (["token", AUTH_SUBPROTOCOL] as const) : p.startsWith(PORT_SUBPROTOCOL) ? (["port", PORT_SUBPROTOCOL] as const) : [undefined, undefined];
    if (!field) throw new Error(`Unknown WebSocket subprotocol '${p.slice(0, 64)}': the platform's entries are ${BASE_SUBPROTOCOL}, ${AUTH_SUBPROTOCOL}<token> and ${PORT_SUBPROTOCOL}<n>.`);
    const value = p.slice(prefix.length);
    if (!value) throw new Error(`WebSocket subprotocol '${prefix}' has no value after the prefix.`);
    if (out[field] !== undefined) throw new Error(`WebSocket subprotocol ${prefix}<...> is offered twice; offer it once.`);
    out[field] = value;
  }
  if (ours.length && !ours.includes(BASE_SUBPROTOCOL)) {
    throw new Error(`A WebSocket that offers ${AUTH_SUBPROTOCOL}<token> or ${PORT_SUBPROTOCOL}<n> must also offer the base subprotocol '${BASE_SUBPROTOCOL}'.`);
  }
  return out;
}

export function tokenOf(headers: IncomingHttpHeaders, offered?: OfferedSubprotocols): string | undefined {
  const header = headers[AUTH_HEADER];
  if (typeof header === "string" && header) return header;
  return offered?.token;
}

/** The app port a request asks for, or an error message saying what is wrong with the ask. */
export function portOf(headers: IncomingHttpHeaders, offered?: OfferedSubprotocols): number | string {
  const header = headers[PORT_HEADER];
  if (Array.isArray(header)) return `${PORT_HEADER} is sent more than once; send it once.`;
  const [raw, from] = typeof header === "string" ? [header, PORT_HEADER] : [offered?.port, `${PORT_SUBPROTOCOL}<n>`];
  if (raw === undefined) return DEFAULT_APP_PORT;
  const port = Number(raw.trim());
  if (!/^\d{1,5}$/.test(raw.trim()) || port < 1 || port > 65535) return `${from} must be a port number from 1 to 65535; got '${raw.slice(0, 32)}'.`;
  return port;
}

/** Whether the request asks for cleartext HTTP/2 to the app (X-aws-proxy-force-h2: true). */
export function forcesH2(headers: IncomingHttpHeaders): boolean {
  return String(headers[FORCE_H2_HEADER] ?? "").trim().toLowerCase() === "true";
}

/** Whether a header name is in the platform's X-aws-proxy-* namespace. */
export function reservedHeader(name: string): boolean {
  return name.toLowerCase().startsWith(RESERVED_HEADER_PREFIX);
}

/** A path of RFC 3986 pchars and slashes only: no '%', no '\\', nothing URL() would re-escape. */
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;

/**
 * Whether a request path reaches the lifecycle hooks (`prefix`, e.g.
 * /aws/lambda-microvms/runtime/v1/) once an app's router has decoded it:
 * an absolute-form target's host, percent-escapes, backslashes, repeated
 * slashes, dot segments and case are all undone first, so no spelling of
 * the path slips past.
 */
export function reachesHookPath(path: string, prefix: string): boolean {
  let p = path;
  // An absolute-form target (GET http://host/path HTTP/1.1): its path is what the app routes.
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p)) {
    try {
      p = new URL(p).pathname;
    } catch {
      return true; // unparseable: refuse rather than guess
    }
  }
  p = p.split("?")[0]!.split("#")[0]!;
  // The common case, decided without decoding: a path of plain characters, with no escapes,
  // backslashes, repeated slashes or dot segments, is what every router sees as it is.
  if (PLAIN_PATH.test(p) && !p.includes("//") && !p.includes("/.")) return p.toLowerCase().startsWith(prefix.toLowerCase().replace(/\/$/, ""));
  // Each valid %XX decoded on its own (a lenient router's view; one stray '%' must not stop the
  // decoding of the rest), up to three layers deep.
  for (let i = 0; i < 3 && /%[0-9a-f]{2}/i.test(p); i++) p = p.replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  p = p.replace(/\\/g, "/").replace(/\/{2,}/g, "/").toLowerCase();
  // A '%' left over must not make URL() re-escape what follows: drop it before resolving dot segments.
  const resolved = new URL((p.startsWith("/") ? p : `/${p}`).replace(/%/g, ""), "http://x").pathname.replace(/\/{2,}/g, "/");
  const base = prefix.toLowerCase().replace(/\/$/, "");
  return resolved === base || resolved.startsWith(`${base}/`) || p.startsWith(base);
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings"]);

/**
 * The headers the app gets: the client's, less hop-by-hop headers, lmvm's
 * own (the token never reaches the app) and HTTP/2 pseudo-headers, plus
 * X-Forwarded-*.
 */
export function forwardedHeaders(headers: IncomingHttpHeaders, client: { ip: string | undefined; host: string | undefined }): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const listed = headers.connection ? String(headers.connection).split(",").map((s) => s.trim().toLowerCase()) : [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || HOP_BY_HOP.has(name) || listed.includes(name) || reservedHeader(name)) continue;
    out[name] = value;
  }
  if (headers.te === "trailers") out.te = "trailers";
  // An HTTP/2 client names the host in :authority; an HTTP/1.1 app reads Host.
  if (!out.host && typeof headers[":authority"] === "string") out.host = headers[":authority"];
  const prior = headers["x-forwarded-for"];
  out["x-forwarded-for"] = [prior, client.ip].filter(Boolean).join(", ");
  out["x-forwarded-proto"] = "https";
  if (client.host) out["x-forwarded-host"] = client.host;
  return out;
}

/** Response headers for the client: the app's, less hop-by-hop ones. */
export function returnedHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  return out;
}
