// A MicroVM's shell in the page: xterm.js on the service's shell protocol
// (README "The shell protocol"), which is the one a browser can speak: the
// shell token goes in the subprotocol list (a browser cannot set headers),
// terminal bytes travel raw in binary frames both ways, a text frame
// {"type":"resize","cols":C,"rows":R} resizes, and the server closes with 1000
// "shell exited" when the shell ends.

import { Terminal } from "@xterm/xterm";

export interface ShellSession {
  close(): void;
}

const CLOSE_SHELL_EXITED = 1000;
const CLOSE_GOING_AWAY = 1001;

/** Columns and rows that fit `host` at the terminal's font. */
function fit(term: Terminal, host: HTMLElement): { cols: number; rows: number } {
  const probe = document.createElement("span");
  probe.className = "term-probe";
  probe.textContent = "W".repeat(20);
  host.appendChild(probe);
  const cell = { w: probe.getBoundingClientRect().width / 20, h: probe.getBoundingClientRect().height };
  probe.remove();
  const cols = Math.max(20, Math.floor((host.clientWidth - 24) / (cell.w || 9)));
  const rows = Math.max(8, Math.min(term.rows, 40));
  return { cols, rows };
}

/**
 * Opens `endpoint`'s shell with `token` in `host`. `onEnd` gets a one-line
 * reason when the shell ends (exit, suspend, terminate, a refused token).
 */
export function openShell(host: HTMLElement, endpoint: string, token: string, onEnd: (reason: string) => void): ShellSession {
  host.replaceChildren();
  const term = new Terminal({ rows: 24, cols: 80, fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace", fontSize: 14, cursorBlink: true, convertEol: false, theme: { background: "#000000", foreground: "#e8e8e8" } });
  term.open(host);
  const url = new URL(endpoint.replace(/^http/, "ws"));
  url.pathname = "/shell";
  const ws = new WebSocket(url, ["lambda-microvms", `lambda-microvms.authentication.${token}`]);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  let ended = false;
  const sendResize = () => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  const refit = () => {
    const { cols, rows } = fit(term, host);
    if (cols !== term.cols || rows !== term.rows) term.resize(cols, rows);
  };
  term.onResize(sendResize);
  term.onData((data) => ws.readyState === WebSocket.OPEN && ws.send(encoder.encode(data)));
  ws.onopen = () => {
    refit();
    sendResize();
    term.focus();
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") return; // session_init: nothing to show
    term.write(new Uint8Array(ev.data as ArrayBuffer));
  };
  ws.onerror = () => undefined; // onclose follows and says why
  ws.onclose = (ev) => {
    window.removeEventListener("resize", refit);
    if (ended) return;
    ended = true;
    const reason =
      ev.code === CLOSE_SHELL_EXITED ? "The shell exited." :
      ev.code === CLOSE_GOING_AWAY ? `The shell ended: ${ev.reason || "the MicroVM is going away"}.` :
      `The shell could not be opened or was cut (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""}). The browser must trust lmvm's CA (<data-dir>/tls/ca.pem) for the endpoint's HTTPS.`;
    term.write(`\r\n\x1b[2m[${reason}]\x1b[0m\r\n`);
    term.options.disableStdin = true;
    onEnd(reason);
  };
  window.addEventListener("resize", refit);
  return {
    close() {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, "closed in the console");
      window.removeEventListener("resize", refit);
      term.dispose();
    },
  };
}
