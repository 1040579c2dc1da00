// The endpoint proxy's TLS: a CA of this lmvm installation, made on first
// start in <data-dir>/tls, and a server certificate it signs for the endpoint
// domain (*.<domain>, <domain>, localhost, 127.0.0.1). Clients trust the CA
// once (ca.pem); the server certificate is remade when the domain changes or
// it nears its end. openssl does the cryptography.

import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import { run } from "../os/index.js";

export interface TlsFiles {
  caCert: string;
  cert: string;
  key: string;
}

/** Browsers refuse server certificates valid for more than 398 days. */
const SERVER_DAYS = 397;
const CA_DAYS = 3650;
const RENEW_BEFORE_MS = 30 * 24 * 3600_000;

/** The files in `dir`, the TLS directory of the data directory. */
export function tlsPaths(dir: string) {
  return { dir, caCert: join(dir, "ca.pem"), caKey: join(dir, "ca.key"), cert: join(dir, "server.pem"), key: join(dir, "server.key") };
}

function covers(certPem: string, domain: string): boolean {
  const cert = new X509Certificate(certPem);
  const names = cert.subjectAltName ?? "";
  return names.includes(`DNS:*.${domain}`) && new Date(cert.validTo).getTime() - Date.now() > RENEW_BEFORE_MS;
}

/** Makes the CA if missing and a server certificate for `domain` if missing, stale or for another domain. */
export async function ensureCertificates(tlsDir: string, domain: string): Promise<TlsFiles> {
  const p = tlsPaths(tlsDir);
  mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  if (!existsSync(p.caCert) || !existsSync(p.caKey)) {
    await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p.caKey, "-out", p.caCert,
      "-days", String(CA_DAYS), "-subj", `/O=lmvm/CN=lmvm local CA (${hostname()})`,
      "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    rmSync(p.cert, { force: true });
  }
  if (existsSync(p.cert) && existsSync(p.key) && covers(readFileSync(p.cert, "utf8"), domain)) return p;
  const csr = join(p.dir, "server.csr");
  const ext = join(p.dir, "server.ext");
  writeFileSync(ext, [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth",
    `subjectAltName=DNS:*.${domain},DNS:${domain},DNS:localhost,IP:127.0.0.1,IP:::1`,
  ].join("\n"));
  try {
    await run("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p.key, "-out", csr, "-subj", `/O=lmvm/CN=*.${domain}`]);
    await run("openssl", ["x509", "-req", "-in", csr, "-CA", p.caCert, "-CAkey", p.caKey, "-CAcreateserial", "-days", String(SERVER_DAYS), "-sha256", "-extfile", ext, "-out", p.cert]);
  } finally {
    rmSync(csr, { force: true });
    rmSync(ext, { force: true });
  }
  return p;
}
