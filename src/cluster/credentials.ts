// Execution-role credentials for MicroVMs on agents (docs/design.md, "Many
// hosts"). The identity service lives in the server, so an agent's metadata
// service asks the server for them: `POST /v1/credentials` on the server's
// cluster listener (`lmvm server --cluster-listen ip:port`), HTTPS with mutual
// TLS under the cluster CA. The server answers only an agent's certificate,
// and only for a MicroVM whose lease that agent's host holds now (the
// certificate's CN is the host id), that is PENDING or RUNNING (its sandbox
// runs: an app may ask while it starts), whose execution role is the role
// asked for, with its id as the session name: a host can never get the role
// credentials of a MicroVM it does not run, nor any other role.
//
// Trust assumption: agents hold the cluster database's credentials (they
// heartbeat and read leases there) with full write access, so a compromised
// agent host is a compromised cluster; these checks bound what a
// misbehaving or confused agent gets over this listener, not what a hostile
// one with the database password could do.

import { createServer, request, type Server } from "node:https";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import { AccessDenied, parseArn, type Microvm, type RoleCredentialSource, type TemporaryCredentials } from "../core/index.js";
import type { ClusterStore } from "../store/index.js";
import { checkNodeIdentity, peerIdentity, type NodeCredentials } from "./ca.js";
import { asClient, parseRelayRequest, type RelayTarget } from "./relay.js";

const CALL_MS = 10_000;

/** The server's side: the cluster listener. */
export async function serveCredentials(opts: {
  tls: NodeCredentials;
  cluster: ClusterStore;
  source: RoleCredentialSource;
  /** The MicroVM as stored (its state and execution role). */
  microvm: (id: string) => Promise<Microvm | undefined>;
  /** The build role of a build (its id the session name) of the image that runs on the host now, if one does (RemoteBuilder.buildRole). */
  buildRole?: (hostId: string, imageArn: string, buildId: string) => string | undefined;
  host: string;
  port: number;
  log: (e: Record<string, unknown>) => void;
  /**
   * Where a standby API node's relay goes once CONNECTed (relay.ts): the API's or the endpoint
   * proxy's connection handling, with the client's address on the socket. Undefined until they
   * are up: a relay is refused (503) until then.
   */
  relay?: () => ((target: RelayTarget, socket: TLSSocket) => void) | undefined;
}): Promise<{ port: number; close(): Promise<void> }> {
  const { ca, cert, key } = opts.tls;
  const server: Server = createServer({ ca, cert, key, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" }, (req, res) => {
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    };
    const peer = peerIdentity((req.socket as TLSSocket).getPeerCertificate());
    if (peer.role !== "agent" || !peer.name) return send(403, { error: "only the cluster's agents may ask for credentials" });
    if (req.method !== "POST" || req.url !== "/v1/credentials") return send(404, { error: "no such call" });
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => {
      text += c;
      if (text.length > 65536) req.destroy();
    });
    req.on("end", () => {
      void (async () => {
        const { roleArn, sourceArn, sessionName } = JSON.parse(text) as { roleArn: string; sourceArn: string; sessionName: string };
        if (parseArn(sourceArn)?.resourceType === "microvm-image") {
          // A build's RUN steps and snapshot boot: only the build role of a build running on this host now.
          const buildRole = opts.buildRole?.(peer.name!, sourceArn, sessionName);
          if (!buildRole) return send(403, { error: `host ${peer.name} runs no build ${sessionName} of ${sourceArn}` });
          if (buildRole !== roleArn) return send(403, { error: `${roleArn} is not the build role of ${sourceArn}` });
          try {
            return send(200, await opts.source.serviceCredentials(roleArn, sourceArn, sessionName));
          } catch (err) {
            return send(err instanceof AccessDenied ? 400 : 500, { error: (err as Error).message, accessDenied: err instanceof AccessDenied });
          }
        }
        const microvmId = parseArn(sourceArn)?.resourceId;
        const lease = microvmId ? await opts.cluster.lease(microvmId) : undefined;
        if (!lease || lease.hostId !== peer.name) return send(403, { error: `host ${peer.name} does not hold ${sourceArn}` });
        const vm = await opts.microvm(microvmId!);
        if (!vm || (vm.state !== "RUNNING" && vm.state !== "PENDING")) return send(403, { error: `MicroVM ${microvmId} is ${vm?.state ?? "gone"}: only a running MicroVM gets its role's credentials` });
        if (!vm.config.executionRoleArn || vm.config.executionRoleArn !== roleArn) {
          opts.log({ level: "warn", msg: "credentials refused: not the MicroVM's execution role", hostId: peer.name, microvmId, roleArn });
          return send(403, { error: `${roleArn} is not MicroVM ${microvmId}'s execution role` });
        }
        if (sessionName !== vm.id) return send(403, { error: `the session name of MicroVM ${microvmId}'s credentials is its id, not ${sessionName}` });
        try {
          send(200, await opts.source.serviceCredentials(roleArn, sourceArn, sessionName));
        } catch (err) {
          send(err instanceof AccessDenied ? 400 : 500, { error: (err as Error).message, accessDenied: err instanceof AccessDenied });
        }
      })().catch((err: Error) => send(400, { error: err.message }));
    });
  });
  // Relayed sockets leave this server's own (closeAllConnections does not see them, and one still in
  // the endpoint's TLS handshake is in no one's list): close() ends them itself.
  const relayed = new Set<TLSSocket>();
  // A standby API node's relay: only a server certificate's, and only once this server serves.
  server.on("connect", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => undefined);
    const refuse = (status: string, why: string) => void socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${why}`);
    const tls = req.socket as TLSSocket;
    const peer = peerIdentity(tls.getPeerCertificate());
    if (peer.role !== "server") return refuse("403 Forbidden", "only the cluster's API nodes (server certificates) may relay");
    const parsed = parseRelayRequest(req.url, req.headers);
    if ("error" in parsed) return refuse("400 Bad Request", parsed.error);
    const deliver = opts.relay?.();
    if (!deliver) return refuse("503 Service Unavailable", "this server is not serving its API and endpoints yet");
    socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head.length) tls.unshift(head);
    asClient(tls, parsed.client);
    // Half-open, as the standby's side is: a client's FIN after its request must not end the
    // answer's way back (the https server's sockets are not half-open; its HTTP parser is done with this one).
    tls.allowHalfOpen = true;
    relayed.add(tls);
    tls.once("close", () => relayed.delete(tls));
    deliver(parsed.target, tls);
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : opts.port,
    close: () => new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
      for (const s of relayed) s.destroy();
      relayed.clear();
    }),
  };
}

/**
 * The agent's side: its metadata service's source of role credentials. `server` answers the
 * cluster listener of the API node that leads now (the leader row, else the agent's --server), so
 * an agent follows a standby that took over.
 */
export class ServerCredentials implements RoleCredentialSource {
  constructor(private readonly tls: NodeCredentials, private readonly server: () => Promise<string>) {}

  async serviceCredentials(roleArn: string, sourceArn: string, sessionName: string): Promise<TemporaryCredentials> {
    const server = await this.server();
    const i = server.lastIndexOf(":");
    const body = JSON.stringify({ roleArn, sourceArn, sessionName });
    return new Promise((resolve, reject) => {
      const req = request({
        host: server.slice(0, i).replace(/^\[(.*)\]$/, "$1"), port: Number(server.slice(i + 1)), method: "POST", path: "/v1/credentials",
        ca: this.tls.ca, cert: this.tls.cert, key: this.tls.key, minVersion: "TLSv1.3", timeout: CALL_MS, checkServerIdentity: checkNodeIdentity("server"),
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => {
          try {
            const r = JSON.parse(text) as TemporaryCredentials & { error?: string; accessDenied?: boolean };
            if (res.statusCode === 200) return resolve({ ...r, expiration: new Date(r.expiration) });
            reject(r.accessDenied ? new AccessDenied(r.error ?? "denied") : new Error(`the server at ${server} refused credentials: ${r.error}`));
          } catch (err) {
            reject(err as Error);
          }
        });
      });
      req.on("timeout", () => req.destroy(new Error(`the server at ${server} did not answer within ${CALL_MS / 1000} s`)));
      req.on("error", reject);
      req.end(body);
    });
  }
}
