// Large uploads through the endpoint proxy as real clients send them, each
// bounded by a deadline: one that sends its whole body before it reads the
// answer (curl without Expect, Python's http.client), over HTTP/1.1, and an
// HTTP/2 stream.

import { once } from "node:events";
import { connect as h2connect } from "node:http2";
import { Readable } from "node:stream";
import { connect as tlsConnect } from "node:tls";

export const UPLOAD_BYTES = 50 * 1024 * 1024;

/** A large body, made as it is sent, as a client streams a file. */
export function upload(bytes = UPLOAD_BYTES): Readable {
  const chunk = Buffer.alloc(64 * 1024, 7);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= bytes) return void this.push(null);
      sent += chunk.length;
      this.push(chunk);
    },
  });
}

export interface UploadTarget {
  port: number;
  ca: Buffer;
  /** The MicroVM's host name: SNI, Host and :authority. */
  host: string;
  path: string;
  headers: Record<string, string>;
}

export interface Answer {
  status: number;
  body: string;
}

/**
 * POSTs UPLOAD_BYTES over HTTP/1.1, all of it before reading anything, then
 * reads the answer (it must carry a content-length). Resolves once both are done.
 */
export async function sendThenRead(t: UploadTarget): Promise<Answer> {
  const socket = tlsConnect({ host: "127.0.0.1", port: t.port, ca: t.ca, servername: t.host, ALPNProtocols: ["http/1.1"] });
  try {
    await once(socket, "secureConnect");
    const head = [`POST ${t.path} HTTP/1.1`, `host: ${t.host}`, `content-length: ${UPLOAD_BYTES}`, ...Object.entries(t.headers).map(([k, v]) => `${k}: ${v}`)];
    socket.write(`${head.join("\r\n")}\r\n\r\n`);
    for await (const chunk of upload()) if (!socket.write(chunk)) await once(socket, "drain");
    let answer = "";
    for await (const chunk of socket) {
      answer += (chunk as Buffer).toString("latin1");
      const end = answer.indexOf("\r\n\r\n");
      if (end < 0) continue;
      const length = /\r\ncontent-length: *(\d+)/i.exec(answer.slice(0, end))?.[1];
      if (length === undefined) throw new Error(`the answer has no content-length: ${JSON.stringify(answer.slice(0, end))}`);
      const body = answer.slice(end + 4);
      if (body.length >= Number(length)) return { status: Number(answer.split(" ")[1]), body };
    }
    throw new Error(`the connection closed before the whole answer: ${JSON.stringify(answer)}`);
  } finally {
    socket.destroy();
  }
}

/** POSTs UPLOAD_BYTES on an HTTP/2 stream; resolves once the answer has ended and the stream has closed. */
export async function h2Upload(t: UploadTarget): Promise<Answer> {
  const session = h2connect(`https://127.0.0.1:${t.port}`, { ca: t.ca, servername: t.host });
  session.on("error", () => undefined);
  try {
    return await new Promise<Answer>((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": t.path, ":authority": t.host, ...t.headers });
      let status = 0;
      let body = "";
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.setEncoding("utf8");
      stream.on("data", (c: string) => (body += c));
      stream.on("error", (err) => (status ? undefined : reject(err))); // once answered, the server may stop the rest of the upload
      stream.on("close", () => (stream.readableEnded ? resolve({ status, body }) : reject(new Error(`the stream closed before its answer ended (code ${stream.rstCode})`))));
      upload().pipe(stream);
    });
  } finally {
    session.destroy();
  }
}
