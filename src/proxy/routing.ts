// Where a request to a MicroVM endpoint goes, decided from its headers alone:
// which MicroVM (the Host's first label, else the token's MicroVM), which
// token (X-aws-proxy-auth, or for WebSockets a subprotocol entry), which port
// (X-aws-proxy-port, or a subprotocol entry; default 8080), and which of the
// client's headers the app gets.

import type { IncomingHttpHeaders } from "node:http";

export const AUTH_HEADER = "x-aws-proxy-auth";
export const PORT_HEADER = "x-aws-proxy-port";
/** WebSocket subprotocol entries: browsers cannot set headers on a WebSocket. */
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

export function tokenOf(headers: IncomingHttpHeaders): string | undefined {
  const header = headers[AUTH_HEADER];
  if (typeof header === "string" && header) return header;
  return subprotocols(headers).find((p) => p.startsWith(AUTH_SUBPROTOCOL))?.slice(AUTH_SUBPROTOCOL.length);
}

/** The app port a request asks for, or an error message saying what is wrong with the ask. */
export function portOf(headers: IncomingHttpHeaders): number | string {
  const header = headers[PORT_HEADER];
  const fromProtocol = subprotocols(headers).find((p) => p.startsWith(PORT_SUBPROTOCOL))?.slice(PORT_SUBPROTOCOL.length);
  const raw = typeof header === "string" ? header : fromProtocol;
  if (raw === undefined) return DEFAULT_APP_PORT;
  const port = Number(raw);
  if (!/^\d{1,5}$/.test(raw.trim()) || port < 1 || port > 65535) return `${PORT_HEADER} must be a port number from 1 to 65535; got '${raw}'`;
  return port;
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings"]);

/**
 * The headers the app gets: the client's, less hop-by-hop headers, lmvm's
 * own (the token never reaches the app) and HTTP/2 pseudo-headers, plus
 * X-Forwarded-*.
 */
export function forwardedHeaders(headers: IncomingHttpHeaders, client: { ip: string | undefined; host: string | undefined }): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const listed = String(headers.connection ?? "").split(",").map((s) => s.trim().toLowerCase());
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || HOP_BY_HOP.has(name) || listed.includes(name) || name === AUTH_HEADER || name === PORT_HEADER) continue;
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
