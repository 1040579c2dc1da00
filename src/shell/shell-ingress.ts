// Shell ingress: a WebSocket to a MicroVM's endpoint, opened with a shell
// token, runs a process inside the MicroVM: an interactive shell under a
// terminal, or one command (`lmvm exec`). The proxy has already checked the
// token and made sure the MicroVM is RUNNING.
//
// Query: ?command=<arg>&command=<arg>… (default: a login shell),
//        &tty=0|1 (default 1), &cols=&rows= (terminal size).
// Frames, in the style of Kubernetes' channel protocol:
//   binary, client → server: [0, …stdin bytes]
//   binary, server → client: [1, …stdout bytes] or [2, …stderr bytes]
//   text, client → server:   {"type":"resize","cols":C,"rows":R}
//                            {"type":"signal","signal":"SIGINT"}
//                            {"type":"eof"}
//   text, server → client:   {"type":"exit","code":N}, then close 1000
// When the MicroVM is suspended or terminated, its shells end first (a live
// exec'd process breaks gVisor's next restore): the client gets close code
// 4001 and the reason.

import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { GuestProcess, SpawnOptions } from "../core/index.js";

export const STDIN = 0;
export const STDOUT = 1;
export const STDERR = 2;
export const CLOSE_MICROVM_STOPPING = 4001;
const PROCESS_EXIT_WAIT_MS = 5000;

export interface ShellIngressOptions {
  spawn(microvmId: string, opts: SpawnOptions): Promise<GuestProcess>;
  /** An open shell counts as traffic for the idle policy. */
  activity(microvmId: string): void;
  log?: (event: Record<string, unknown>) => void;
}

interface Session {
  ws: WebSocket;
  process: GuestProcess;
  exited: Promise<void>;
}

export class ShellIngress {
  private readonly wss = new WebSocketServer({
    noServer: true,
    maxPayload: 1024 * 1024,
    // Echo one of lmvm's subprotocol entries, as a browser requires an answer when it offered any.
    handleProtocols: (offered) => [...offered].find((p) => p.startsWith("lambda-microvms.")) ?? false,
  });
  private readonly sessions = new Map<string, Set<Session>>();
  private readonly activityTimer: NodeJS.Timeout;

  constructor(private readonly opts: ShellIngressOptions) {
    this.activityTimer = setInterval(() => {
      for (const [id, set] of this.sessions) if (set.size) this.opts.activity(id);
    }, 1000);
    this.activityTimer.unref();
  }

  upgrade(microvmId: string, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? "/", "http://shell");
    const argv = url.searchParams.getAll("command");
    const tty = url.searchParams.get("tty") !== "0";
    const size = (name: string, fallback: number) => Math.min(1000, Math.max(1, Number(url.searchParams.get(name)) || fallback));
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("error", () => undefined);
      this.opts
        .spawn(microvmId, { argv, tty, cols: size("cols", 80), rows: size("rows", 24) })
        .then((process) => this.attach(microvmId, ws, process))
        .catch((err: Error) => {
          ws.send(JSON.stringify({ type: "error", message: err.message }));
          ws.close(1011, err.message.slice(0, 120));
        });
    });
  }

  private attach(microvmId: string, ws: WebSocket, process: GuestProcess): void {
    let set = this.sessions.get(microvmId);
    if (!set) this.sessions.set(microvmId, (set = new Set()));
    const session: Session = { ws, process, exited: new Promise((resolve) => process.onExit(() => resolve())) };
    set.add(session);
    this.opts.activity(microvmId);
    process.onOutput((stream, data) => {
      if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([stream === "stdout" ? STDOUT : STDERR]), data]));
    });
    process.onExit((code) => {
      set.delete(session);
      if (!set.size) this.sessions.delete(microvmId);
      if (ws.readyState === ws.OPEN) {
        ws.send(JSON.stringify({ type: "exit", code }));
        ws.close(1000, `exited ${code}`);
      }
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        if (data[0] === STDIN) process.write(data.subarray(1));
        return;
      }
      let msg: { type?: string; cols?: number; rows?: number; signal?: string };
      try {
        msg = JSON.parse(data.toString("utf8"));
      } catch {
        return;
      }
      if (msg.type === "resize" && Number.isInteger(msg.cols) && Number.isInteger(msg.rows)) process.resize(msg.cols!, msg.rows!);
      else if (msg.type === "signal" && typeof msg.signal === "string" && /^SIG[A-Z0-9]+$/.test(msg.signal)) process.signal(msg.signal);
      else if (msg.type === "eof") process.endInput();
    });
    ws.on("close", () => {
      if (set.has(session)) process.kill();
    });
  }

  /** Ends the MicroVM's shells, telling their clients why, and waits until their processes are gone. */
  async close(microvmId: string, reason: string): Promise<void> {
    const set = this.sessions.get(microvmId);
    if (!set?.size) return;
    const waits: Promise<void>[] = [];
    for (const s of set) {
      if (s.ws.readyState === s.ws.OPEN) s.ws.close(CLOSE_MICROVM_STOPPING, Buffer.from(reason).subarray(0, 123).toString());
      s.process.kill();
      waits.push(s.exited);
    }
    await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, PROCESS_EXIT_WAIT_MS))]);
    this.sessions.delete(microvmId);
  }

  stop(): void {
    clearInterval(this.activityTimer);
    for (const id of [...this.sessions.keys()]) void this.close(id, "The lmvm server is stopping.");
  }
}
