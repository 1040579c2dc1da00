// Shell ingress: a WebSocket to wss://<endpoint>/shell, opened with a shell
// token, runs a process inside the MicroVM. The proxy has already checked the
// token and made sure the MicroVM is RUNNING. Two protocols (protocol.ts):
//
// The service's, for any client written for AWS Lambda MicroVMs (subprotocols
// `lambda-microvms` and `lambda-microvms.authentication.<token>`): a login
// shell as root under a terminal. First a text frame
// {"type":"session_init","session_id":"<uuid>"}; then binary frames of raw
// terminal bytes both ways; client text {"type":"resize","cols":C,"rows":R}
// resizes the terminal, any other client text is typed into the shell; when
// the shell exits, close 1000 "shell exited".
//
// lmvm's exec protocol (subprotocol lmvm.exec.v1 also offered), for `lmvm exec`
// and `lmvm shell`, which need what the service's lacks:
// Query: ?command=<arg>&command=<arg>… (default: a login shell as root),
//        &tty=0|1 (default 1), &cols=&rows= (terminal size).
// Frames, in the style of Kubernetes' channel protocol:
//   binary, client → server: [0, …stdin bytes]
//   binary, server → client: [1, …stdout bytes] or [2, …stderr bytes]
//   text, client → server:   {"type":"resize","cols":C,"rows":R}
//                            {"type":"signal","signal":"SIGINT"}
//                            {"type":"eof"}
//   text, server → client:   {"type":"exit","code":N}, then close 1000
//
// When the MicroVM is suspended or terminated, its shells end first (a live
// exec'd process breaks gVisor's next restore): clients of the service's
// protocol get close 1001 (going away) with the reason, those of the exec
// protocol 4001.

import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import type { GuestProcess, SpawnOptions } from "../core/index.js";
import {
  BASE_SUBPROTOCOL, CLOSE_GOING_AWAY, CLOSE_MICROVM_STOPPING, CLOSE_SHELL_EXITED, CLOSE_SPAWN_FAILED, EXEC_SUBPROTOCOL, SHELL_EXITED_REASON, SHELL_PATH, STDERR, STDIN, STDOUT,
} from "./protocol.js";

const PROCESS_EXIT_WAIT_MS = 5000;
/** The service's protocol starts the terminal at this size; its clients send a resize to change it. */
const DEFAULT_COLS = 80;
const DEFAULT_ROWS = 24;

export interface ShellIngressOptions {
  spawn(microvmId: string, opts: SpawnOptions): Promise<GuestProcess>;
  /** An open shell counts as traffic for the idle policy. */
  activity(microvmId: string): void;
  log?: (event: Record<string, unknown>) => void;
}

type Protocol = "service" | "exec";

interface Session {
  ws: WebSocket;
  protocol: Protocol;
  /** Set once the process has started. */
  process?: GuestProcess;
  exited: Promise<void>;
  markExited(): void;
}

function offeredSubprotocols(req: IncomingMessage): string[] {
  const raw = req.headers["sec-websocket-protocol"];
  return (Array.isArray(raw) ? raw.join(",") : raw ?? "").split(",").map((s) => s.trim()).filter(Boolean);
}

/** Clamps a terminal dimension from a client to what a terminal can be. */
const dimension = (n: unknown, fallback: number) => (Number.isInteger(n) && (n as number) > 0 ? Math.min(1000, n as number) : fallback);

/** What a client may send while its shell is still starting. */
const EARLY_INPUT_LIMIT = 1024 * 1024;

export class ShellIngress {
  private readonly wss = new WebSocketServer({
    noServer: true,
    maxPayload: 1024 * 1024,
    // A client that offers subprotocols (a browser must: it cannot set headers) needs one named back.
    handleProtocols: (offered) =>
      offered.has(EXEC_SUBPROTOCOL) ? EXEC_SUBPROTOCOL : offered.has(BASE_SUBPROTOCOL) ? BASE_SUBPROTOCOL : ([...offered].find((p) => p.startsWith(`${BASE_SUBPROTOCOL}.`)) ?? false),
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
    if (url.pathname !== SHELL_PATH) {
      const body = `A shell token opens the shell at ${SHELL_PATH} (wss://<endpoint>${SHELL_PATH}), not ${url.pathname}.\n`;
      return void socket.end(`HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\nx-lmvm-proxy-error: true\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    }
    const protocol: Protocol = offeredSubprotocols(req).includes(EXEC_SUBPROTOCOL) ? "exec" : "service";
    const spawnOptions: SpawnOptions =
      protocol === "exec"
        ? {
            argv: url.searchParams.getAll("command"),
            tty: url.searchParams.get("tty") !== "0",
            cols: dimension(Number(url.searchParams.get("cols")), DEFAULT_COLS),
            rows: dimension(Number(url.searchParams.get("rows")), DEFAULT_ROWS),
          }
        : { argv: [], tty: true, cols: DEFAULT_COLS, rows: DEFAULT_ROWS };
    this.wss.handleUpgrade(req, socket, head, (ws) => this.open(microvmId, ws, protocol, spawnOptions));
  }

  private open(microvmId: string, ws: WebSocket, protocol: Protocol, spawnOptions: SpawnOptions): void {
    ws.on("error", () => undefined);
    let markExited!: () => void;
    const session: Session = { ws, protocol, exited: new Promise<void>((resolve) => (markExited = resolve)), markExited: () => markExited() };
    let set = this.sessions.get(microvmId);
    if (!set) this.sessions.set(microvmId, (set = new Set()));
    set.add(session);
    this.opts.activity(microvmId);
    const forget = () => {
      set.delete(session);
      if (!set.size && this.sessions.get(microvmId) === set) this.sessions.delete(microvmId);
      session.markExited();
    };
    // Frames that come while the process starts (a resize, the first keystrokes) wait for it.
    // Bounded: a client that floods a starting shell is closed (1009, message too big).
    const early: [Buffer, boolean][] = [];
    let earlyBytes = 0;
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (session.process) return this.receive(session, session.process, data, isBinary);
      earlyBytes += data.length;
      if (earlyBytes > EARLY_INPUT_LIMIT) return ws.close(1009, "too much input before the shell started");
      early.push([data, isBinary]);
    });
    // A session whose process is still starting is forgotten only once the start has ended (the
    // process is killed then): a suspend must not checkpoint while a runsc exec is under way.
    ws.on("close", () => session.process?.kill());
    this.opts
      .spawn(microvmId, spawnOptions)
      .then((process) => {
        if (ws.readyState !== ws.OPEN) {
          process.onExit(forget);
          return process.kill();
        }
        session.process = process;
        if (protocol === "service") ws.send(JSON.stringify({ type: "session_init", session_id: randomUUID() }));
        process.onOutput((stream, data) => {
          if (ws.readyState !== ws.OPEN) return;
          ws.send(protocol === "service" ? data : Buffer.concat([Buffer.from([stream === "stdout" ? STDOUT : STDERR]), data]));
        });
        process.onExit((code) => {
          forget();
          if (ws.readyState !== ws.OPEN) return;
          if (protocol === "service") return ws.close(CLOSE_SHELL_EXITED, SHELL_EXITED_REASON);
          ws.send(JSON.stringify({ type: "exit", code }));
          ws.close(CLOSE_SHELL_EXITED, `exited ${code}`);
        });
        for (const [data, isBinary] of early.splice(0)) this.receive(session, process, data, isBinary);
      })
      .catch((err: Error) => {
        forget();
        this.opts.log?.({ msg: "shell could not start", microvmId, err: err.message });
        if (ws.readyState !== ws.OPEN) return;
        if (protocol === "exec") ws.send(JSON.stringify({ type: "error", message: err.message }));
        ws.close(CLOSE_SPAWN_FAILED, Buffer.from(err.message).subarray(0, 123).toString());
      });
  }

  private receive(session: Session, process: GuestProcess, data: Buffer, isBinary: boolean): void {
    if (session.protocol === "service") {
      if (isBinary) return process.write(data);
      const text = data.toString("utf8");
      const resize = parseResize(text);
      if (resize) process.resize(resize.cols, resize.rows);
      else process.write(text);
      return;
    }
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
    if (msg.type === "resize" && Number.isInteger(msg.cols) && Number.isInteger(msg.rows)) process.resize(dimension(msg.cols, DEFAULT_COLS), dimension(msg.rows, DEFAULT_ROWS));
    else if (msg.type === "signal" && typeof msg.signal === "string" && /^SIG[A-Z0-9]+$/.test(msg.signal)) process.signal(msg.signal);
    else if (msg.type === "eof") process.endInput();
  }

  /** Ends the MicroVM's shells, telling their clients why, and waits until their processes are gone. */
  async close(microvmId: string, reason: string): Promise<void> {
    const set = this.sessions.get(microvmId);
    if (!set?.size) return;
    const waits: Promise<void>[] = [];
    for (const s of set) {
      if (s.ws.readyState === s.ws.OPEN) s.ws.close(s.protocol === "service" ? CLOSE_GOING_AWAY : CLOSE_MICROVM_STOPPING, Buffer.from(reason).subarray(0, 123).toString());
      s.process?.kill();
      waits.push(s.exited);
    }
    await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, PROCESS_EXIT_WAIT_MS))]);
    if (this.sessions.get(microvmId) === set) this.sessions.delete(microvmId);
  }

  stop(): void {
    clearInterval(this.activityTimer);
    for (const id of [...this.sessions.keys()]) void this.close(id, "The lmvm server is stopping.");
  }
}

/** A client's {"type":"resize","cols":C,"rows":R}, or undefined for any other text (typed into the shell). */
function parseResize(text: string): { cols: number; rows: number } | undefined {
  if (!text.startsWith("{")) return undefined;
  try {
    const msg = JSON.parse(text) as { type?: unknown; cols?: unknown; rows?: unknown };
    if (msg.type === "resize" && Number.isInteger(msg.cols) && Number.isInteger(msg.rows) && (msg.cols as number) > 0 && (msg.rows as number) > 0) {
      return { cols: Math.min(1000, msg.cols as number), rows: Math.min(1000, msg.rows as number) };
    }
  } catch {
    // not JSON: typed into the shell
  }
  return undefined;
}
