// The S3-compatible server of test/support/s3-server.ts, in a process of its
// own: s3rver (SigV4, multipart) on 127.0.0.1, a random port, files in the
// directory given as argv[2]. It prints {"port": N} once it listens and exits
// when its stdin closes (the test process that started it is gone).

import S3rver from "s3rver";

const directory = process.argv[2];
if (!directory) throw new Error("usage: s3-server-main <directory>");
const server = new S3rver({ port: 0, address: "127.0.0.1", directory, silent: true });
const { port } = (await server.run()) as { port: number };
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => process.exit(0));
