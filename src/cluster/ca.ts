// The cluster's certificate authority (docs/design.md, "Many hosts"): every
// connection between the server and agents is HTTPS with mutual TLS, and each
// side accepts only certificates this CA signed. Debian's `openssl` does the
// cryptography, as for the endpoint proxy's own CA (src/proxy/certificates.ts):
// it is already a host prerequisite, so no npm X.509 library is needed.
//
// Layout of a cluster directory:
//   ca.pem            the CA certificate (every node needs it)
//   ca.key            the CA's private key (only where certificates are issued)
//   nodes/<name>.pem  a node's certificate (leaf, then nothing else)
//   nodes/<name>.key  its private key
// A node's certificate says its role in its OU (server or agent) and its
// name in its CN; it is valid for TLS server and client authentication and
// names the node's IP addresses and DNS names (subjectAltName), so the server
// checks an agent's certificate against the address it dials.

import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { join } from "node:path";
import { run } from "../os/index.js";

export type NodeRole = "server" | "agent";

const CA_DAYS = 3650;
const NODE_DAYS = 825;
const RENEW_BEFORE_MS = 30 * 24 * 3600_000;

export interface NodeCredentials {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  name: string;
  role: NodeRole;
}

export function clusterPaths(dir: string) {
  return {
    dir,
    caCert: join(dir, "ca.pem"),
    caKey: join(dir, "ca.key"),
    nodes: join(dir, "nodes"),
    cert: (name: string) => join(dir, "nodes", `${name}.pem`),
    key: (name: string) => join(dir, "nodes", `${name}.key`),
  };
}

const NAME = /^[a-z0-9][a-z0-9.-]{0,62}$/;

function checkName(name: string): void {
  if (!NAME.test(name)) throw new Error(`A node name is 1 to 63 lower-case letters, digits, '.' or '-', starting with a letter or digit; got '${name}'.`);
}

/** Makes the cluster's CA in `dir` (refusing to replace one: every node's certificate would stop being accepted). */
export async function initCluster(dir: string): Promise<{ caCert: string; created: boolean }> {
  const p = clusterPaths(dir);
  if (existsSync(p.caCert)) {
    if (!existsSync(p.caKey)) throw new Error(`${dir} holds a CA certificate without its key: it can verify nodes but not issue certificates. Copy ca.key there, or init another directory.`);
    return { caCert: p.caCert, created: false };
  }
  mkdirSync(p.nodes, { recursive: true, mode: 0o700 });
  await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p.caKey, "-out", p.caCert,
    "-days", String(CA_DAYS), "-subj", "/O=lmvm/CN=lmvm cluster CA",
    "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  return { caCert: p.caCert, created: true };
}

/** True when the certificate is the role's, covers every address in `addresses` and is not near its end. */
function fits(certPem: string, role: NodeRole, addresses: string[]): boolean {
  const cert = new X509Certificate(certPem);
  if (!cert.subject.includes(`OU=${role}`)) return false;
  if (new Date(cert.validTo).getTime() - Date.now() < RENEW_BEFORE_MS) return false;
  const names = new Set((cert.subjectAltName ?? "").split(", ").map((n) => n.trim()));
  return addresses.every((a) => names.has(isIP(a) ? `IP Address:${a}` : `DNS:${a}`));
}

/**
 * TLS's check of a peer that should be a node of `role` at `host`: the usual name check (its
 * subjectAltName covers the address dialled) and the role in its OU, so a server certificate
 * (or another role's) at an agent's address is refused.
 */
export function checkNodeIdentity(role: NodeRole): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    const err = checkServerIdentity(host, cert);
    if (err) return err;
    const peer = peerIdentity(cert as unknown as { subject?: { [k: string]: string | string[] | undefined } });
    if (peer.role !== role) return new Error(`the certificate at ${host} is ${peer.role ? `a ${peer.role}'s` : "no node's"} (${peer.name ?? "no name"}), not ${role === "agent" ? "an agent" : "a server"}'s`);
    return undefined;
  };
}

/**
 * Issues a certificate for a node (signed by the cluster's CA, which must be in `dir`) valid for
 * `addresses` (IPs and DNS names), or keeps the one there when it still fits.
 */
export async function issueNode(dir: string, name: string, role: NodeRole, addresses: string[]): Promise<{ cert: string; key: string; issued: boolean }> {
  checkName(name);
  const p = clusterPaths(dir);
  if (!existsSync(p.caCert)) throw new Error(`No cluster CA in ${dir}: run 'lmvm cluster init --dir ${dir}' first.`);
  const cert = p.cert(name);
  const key = p.key(name);
  if (existsSync(cert) && existsSync(key) && fits(readFileSync(cert, "utf8"), role, addresses)) return { cert, key, issued: false };
  if (!existsSync(p.caKey)) throw new Error(`No certificate for node '${name}' (role ${role}, for ${addresses.join(", ") || "no address"}) in ${p.nodes}, and no CA key in ${dir} to issue one: issue it where the CA key is ('lmvm cluster issue --dir <ca dir> --name ${name} --role ${role}${addresses.length ? ` --address ${addresses.join(",")}` : ""}') and copy nodes/${name}.pem and nodes/${name}.key here.`);
  mkdirSync(p.nodes, { recursive: true, mode: 0o700 });
  const names = [...new Set([name, ...addresses])];
  const san = names.map((a) => (isIP(a) ? `IP:${a}` : `DNS:${a}`)).join(",");
  const csr = join(p.nodes, `${name}.csr`);
  const ext = join(p.nodes, `${name}.ext`);
  writeFileSync(ext, [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth,clientAuth",
    `subjectAltName=${san}`,
  ].join("\n"));
  try {
    await run("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj", `/O=lmvm/OU=${role}/CN=${name}`]);
    await run("openssl", ["x509", "-req", "-in", csr, "-CA", p.caCert, "-CAkey", p.caKey, "-CAcreateserial", "-days", String(NODE_DAYS), "-sha256", "-extfile", ext, "-out", cert]);
  } finally {
    rmSync(csr, { force: true });
    rmSync(ext, { force: true });
  }
  return { cert, key, issued: true };
}

/** A node's TLS material: its certificate (issued from the CA in `dir` when missing and the CA key is there). */
export async function nodeCredentials(dir: string, name: string, role: NodeRole, addresses: string[]): Promise<NodeCredentials> {
  const { cert, key } = await issueNode(dir, name, role, addresses);
  return { ca: readFileSync(clusterPaths(dir).caCert), cert: readFileSync(cert), key: readFileSync(key), name, role };
}

/** The role (OU) and name (CN) of a peer certificate, as node's TLS socket reports it. */
export function peerIdentity(cert: { subject?: { [k: string]: string | string[] | undefined } } | undefined): { role?: string; name?: string } {
  const s = cert?.subject ?? {};
  const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  return { role: one(s.OU), name: one(s.CN) };
}
