// Processes in MicroVMs on cluster hosts (lmvm exec, shells): a WebSocket
// over the same mutual TLS as every RPC, `GET /v1/spawn?microvm=<id>` with
// the lease's epoch in `lmvm-epoch` and the SpawnOptions as JSON in
// `lmvm-spawn`. The agent fences it like any call, starts the process with
// its runtime, answers {t:"started"} and then relays, in JSON text frames:
//   server -> agent  {t:"in", d:<base64>} {t:"end"} {t:"resize", cols, rows} {t:"signal", name} {t:"kill"}
//   agent -> server  {t:"out", s:"stdout"|"stderr", d:<base64>} {t:"exit", code} {t:"error", message}
// A connection that closes without an exit is the process ended (code 255).

import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocket, WebSocketServer } from "ws";
import type { GuestProcess, SpawnOptions } from "../core/index.js";
import { checkNodeIdentity, type NodeCredentials } from "./ca.js";
import { EPOCH_HEADER } from "./wire.js";

export const SPAWN_PATH = "/v1/spawn";
export const SPAWN_HEADER = "lmvm-spawn";
const START_DEADLINE_MS = 30_000;
/** Both sides ping every so often; a peer that has not answered the last ping by the next is gone (its connection is ended). */
const PING_MS = 15_000;

/** Pings the peer every PING_MS and ends the connection when a ping went unanswered: a host or server that vanished without a FIN. */
function keepAlive(ws: WebSocket): void {
  let answered = true;
  ws.on("pong", () => (answered = true));
  const timer = setInterval(() => {
    if (!answered) return void ws.terminate();
    answered = false;
    ws.ping();
  }, PING_MS);
  timer.unref();
  ws.once("close", () => clearInterval(timer));
}

/** A frame as a Message, or undefined when it is not one (a bad frame is dropped, never thrown). */
function parse(raw: unknown): Message | undefined {
  try {
    const m = JSON.parse(String(raw)) as Message;
    return m && typeof m === "object" && typeof m.t === "string" ? m : undefined;
  } catch {
    return undefined;
  }
}

type Message = { t: string; d?: string; s?: "stdout" | "stderr"; code?: number; cols?: number; rows?: number; name?: string; message?: string };

/** The agent's side: takes the upgrade, and relays one process started by `start`. */
export class SpawnRelay {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 });

  /**
   * `check` fences the call (rejects with the reason to refuse); `start` starts the process.
   */
  handle(req: IncomingMessage, socket: Duplex, head: Buffer, check: (microvmId: string, epoch: number) => Promise<void>, start: (microvmId: string, opts: SpawnOptions) => Promise<GuestProcess>): void {
    const url = new URL(req.url ?? "/", "https://agent");
    const id = url.searchParams.get("microvm") ?? "";
    const refuse = (status: number, why: string) => void socket.end(`HTTP/1.1 ${status} ${status === 409 ? "Conflict" : "Bad Request"}\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(why)}\r\n\r\n${why}`);
    let opts: SpawnOptions;
    try {
      opts = JSON.parse(String(req.headers[SPAWN_HEADER] ?? "")) as SpawnOptions;
      if (!Array.isArray(opts.argv) || typeof opts.tty !== "boolean") throw new Error("argv and tty are required");
    } catch (err) {
      return refuse(400, `bad ${SPAWN_HEADER}: ${(err as Error).message}`);
    }
    check(id, Number(req.headers[EPOCH_HEADER])).then(
      () => this.wss.handleUpgrade(req, socket, head, (ws) => void this.relay(ws, id, opts, start)),
      (err: Error) => refuse(409, err.message),
    );
  }

  private async relay(ws: WebSocket, id: string, opts: SpawnOptions, start: (microvmId: string, opts: SpawnOptions) => Promise<GuestProcess>): Promise<void> {
    const send = (m: Message) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(m));
    let proc: GuestProcess;
    try {
      proc = await start(id, opts);
    } catch (err) {
      send({ t: "error", message: (err as Error).message });
      ws.close();
      return;
    }
    proc.onOutput((s, data) => send({ t: "out", s, d: data.toString("base64") }));
    proc.onExit((code) => {
      send({ t: "exit", code });
      ws.close();
    });
    keepAlive(ws);
    ws.on("message", (raw) => {
      const m = parse(raw);
      if (!m) return;
      if (m.t === "in" && m.d !== undefined) proc.write(Buffer.from(m.d, "base64"));
      else if (m.t === "end") proc.endInput();
      else if (m.t === "resize") proc.resize(Number(m.cols), Number(m.rows));
      else if (m.t === "signal" && m.name) proc.signal(m.name);
      else if (m.t === "kill") proc.kill();
    });
    ws.on("close", () => proc.kill());
    send({ t: "started" });
  }

  /** How many process connections are open. */
  get size(): number {
    return this.wss.clients.size;
  }

  /** Ends every process connection (their processes are killed as each closes). */
  endAll(): void {
    for (const c of this.wss.clients) c.terminate();
  }

  close(): void {
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
  }
}

/** The server's side: a GuestProcess whose process runs on the MicroVM's host. */
export function remoteSpawn(tls: NodeCredentials, address: string, microvmId: string, epoch: number, opts: SpawnOptions): Promise<GuestProcess> {
  const ws = new WebSocket(`wss://${address}${SPAWN_PATH}?microvm=${encodeURIComponent(microvmId)}`, {
    ca: tls.ca, cert: tls.cert, key: tls.key, minVersion: "TLSv1.3",
    // ws hands its options to tls.connect: Node's checkServerIdentity (an Error or undefined), not ws's typing of it.
    ...({ checkServerIdentity: checkNodeIdentity("agent") } as object),
    headers: { [EPOCH_HEADER]: String(epoch), [SPAWN_HEADER]: JSON.stringify(opts) },
    handshakeTimeout: START_DEADLINE_MS,
  });
  const outputs: ((s: "stdout" | "stderr", d: Buffer) => void)[] = [];
  const exits: ((code: number) => void)[] = [];
  let exited: number | undefined;
  const exit = (code: number) => {
    if (exited !== undefined) return;
    exited = code;
    for (const l of exits.splice(0)) l(code);
  };
  const send = (m: Message) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(m));
  const proc: GuestProcess = {
    write: (data) => send({ t: "in", d: Buffer.from(data).toString("base64") }),
    endInput: () => send({ t: "end" }),
    resize: (cols, rows) => send({ t: "resize", cols, rows }),
    signal: (name) => send({ t: "signal", name }),
    onOutput: (l) => void outputs.push(l),
    onExit: (l) => (exited !== undefined ? l(exited) : void exits.push(l)),
    kill: () => {
      send({ t: "kill" });
      setTimeout(() => ws.terminate(), 2000).unref();
    },
  };
  return new Promise((resolve, reject) => {
    let started = false;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the process in MicroVM ${microvmId} did not start on host ${address} within ${START_DEADLINE_MS / 1000} s`));
    }, START_DEADLINE_MS);
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c));
      res.on("end", () => {
        clearTimeout(timer);
        reject(new Error(`host ${address} refused the process in MicroVM ${microvmId}: ${body || `status ${res.statusCode}`}`));
      });
    });
    ws.on("error", (err) => {
      clearTimeout(timer);
      if (!started) reject(new Error(`cannot reach host ${address} for a process in MicroVM ${microvmId}: ${err.message}`));
    });
    keepAlive(ws);
    ws.on("message", (raw) => {
      const m = parse(raw);
      if (!m) {
        ws.terminate();
        return;
      }
      if (m.t === "started") {
        started = true;
        clearTimeout(timer);
        resolve(proc);
      } else if (m.t === "error") {
        clearTimeout(timer);
        reject(new Error(String(m.message)));
      } else if (m.t === "out" && m.d !== undefined) {
        const data = Buffer.from(m.d, "base64");
        for (const l of outputs) l(m.s ?? "stdout", data);
      } else if (m.t === "exit") exit(Number(m.code));
    });
    ws.on("close", () => {
      clearTimeout(timer);
      if (started) exit(255);
      else reject(new Error(`host ${address} closed the connection before the process in MicroVM ${microvmId} started`));
    });
  });
}
