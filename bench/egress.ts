// Egress throughput: the same download, by the same client (Python's urllib,
// timing itself from the request to the last byte), from a server in a test
// internet namespace (test/support/test-network.ts, traffic never leaves the
// machine), side by side in one run:
// - from inside a MicroVM with INTERNET_EGRESS (gVisor's netstack, the
//   sandbox's veth, the host's forwarding, NAT and firewall, and the size's
//   bandwidth shaping), for the default size (4 MB/s each way) and the
//   largest (16 MB/s), each the size's cap as the AWS size table gives it;
// - from the host's own network namespace, straight to the same server.
// The server runs as its own process (`lmvm server`); each transfer is
// repeated, and the report gives the median and the spread (min..max).

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, RunMicrovmCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { MICROVM_SIZES, sizeFor } from "../src/core/index.js";
import { makeZip } from "../test/support/artifacts.js";
import { eventually, readCredentials, sdkClient } from "../test/support/platform.js";
import { lmvm, spawnServer } from "../test/support/processes.js";
import { freeSandboxes } from "../test/support/sandboxes.js";
import { startTestNetwork } from "../test/support/test-network.js";

const run = promisify(execFile);
const MB = 1_000_000;
const MIB = 1024 * 1024;
const ROUNDS = 5;
const CONNECTORS = (name: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${name}`;

// One download, timed by the client itself, so that starting the process (and, in the MicroVM, `lmvm exec`) is not counted.
const CLIENT = `import json, sys, time, urllib.request
url = sys.argv[1]
start = time.perf_counter()
n = 0
with urllib.request.urlopen(url, timeout=120) as r:
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            break
        n += len(chunk)
print(json.dumps({"bytes": n, "seconds": time.perf_counter() - start}))
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const rate = (r: { bytes: number; seconds: number }) => r.bytes / r.seconds / MB;
const line = (label: string, rates: number[], extra = "") =>
  `  ${label.padEnd(46)} ${median(rates).toFixed(2).padStart(8)} MB/s   (${Math.min(...rates).toFixed(2)}..${Math.max(...rates).toFixed(2)}, ${rates.length} runs)${extra}`;

export async function egressBench(): Promise<string[]> {
  const net = await startTestNetwork();
  const dataDir = mkdtempSync(join(tmpdir(), "lmvm-bench-egress-"));
  const server = await spawnServer(dataDir, { builds: true, args: ["--dns-resolvers", net.resolvers.join(",")] });
  const client: LambdaMicrovmsClient = sdkClient(server.url, readCredentials(dataDir));
  const env = { LMVM_DATA_DIR: dataDir };
  const ids: string[] = [];
  try {
    const zip = join(dataDir, "app.zip");
    writeFileSync(zip, makeZip([
      { name: "Dockerfile", content: 'FROM lmvm/debian12\nCOPY download.py /download.py\nCMD ["python3", "-m", "http.server", "8080"]\n' },
      { name: "download.py", content: CLIENT },
    ]));
    const sizes = [
      { image: "egress-default", memory: undefined as number | undefined },
      { image: "egress-largest", memory: MICROVM_SIZES.at(-1)!.baselineMemoryMiB },
    ];
    for (const s of sizes) {
      await client.send(new CreateMicrovmImageCommand({
        name: s.image, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
        codeArtifact: { uri: `file://${zip}` }, ...(s.memory ? { resources: [{ minimumMemoryInMiB: s.memory }] } : {}),
      }));
    }
    const hostFile = join(dataDir, "download.py");
    writeFileSync(hostFile, CLIENT);
    const out = ["egress throughput: one HTTP download from a test-internet namespace, MicroVM (INTERNET_EGRESS) vs the host's own namespace"];
    for (const s of sizes) {
      const image = await eventually(async () => {
        const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: s.image }));
        return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
      }, `the ${s.image} build`, 900_000);
      if (image.state !== "CREATED") throw new Error(`the bench image ${s.image} failed to build (${image.state}); see lmvm logs build`);
      const size = sizeFor(s.memory ?? 2048)!;
      // About 4 seconds at the size's cap, the same bytes on both sides.
      const bytes = Math.round((size.bandwidthBytesPerSecond * 4) / MIB) * MIB;
      const url = `${net.internet.webUrlByAddress}bytes?n=${bytes}`;
      const { microvmId } = await client.send(new RunMicrovmCommand({
        imageIdentifier: `arn:aws:lambda:us-east-1:000000000000:microvm-image:${s.image}`,
        ingressNetworkConnectors: [CONNECTORS("SHELL_INGRESS")], egressNetworkConnectors: [CONNECTORS("INTERNET_EGRESS")],
      }));
      ids.push(microvmId!);
      await eventually(async () => ((await client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }))).state === "RUNNING" ? true : undefined), "the MicroVM to run", 120_000);
      const vm: number[] = [];
      const host: number[] = [];
      // Alternating, so that both sides see the same machine load.
      for (let i = 0; i < ROUNDS; i++) {
        const inside = await lmvm(["exec", microvmId!, "--", "python3", "/download.py", url], env, 300_000);
        if (inside.code !== 0) throw new Error(`the download in the MicroVM failed: ${inside.stderr}${inside.stdout}`);
        const r = JSON.parse(inside.stdout.trim().split("\n").at(-1)!) as { bytes: number; seconds: number };
        if (r.bytes !== bytes) throw new Error(`the MicroVM got ${r.bytes} bytes of ${bytes}`);
        vm.push(rate(r));
        const outside = JSON.parse((await run("python3", [hostFile, url], { timeout: 300_000 })).stdout.trim()) as { bytes: number; seconds: number };
        if (outside.bytes !== bytes) throw new Error(`the host got ${outside.bytes} bytes of ${bytes}`);
        host.push(rate(outside));
      }
      const cap = size.bandwidthBytesPerSecond / MB;
      out.push(`${s.memory ?? 2048} MiB size (cap ${cap} MB/s each way), ${(bytes / MIB).toFixed(0)} MiB per download:`);
      out.push(line("MicroVM with INTERNET_EGRESS", vm, `   ${(median(vm) / cap * 100).toFixed(0)}% of the cap`));
      out.push(line("host's own network namespace", host, `   MicroVM ${(median(vm) / median(host) * 100).toFixed(1)}% of the host`));
      await client.send(new TerminateMicrovmCommand({ microvmIdentifier: microvmId! }));
      ids.splice(ids.indexOf(microvmId!), 1);
    }
    out.push("  (the MicroVM's figure is its size's shaping: lmvm caps each MicroVM at the size table's bandwidth, as the service does; the host is not shaped)");
    return out;
  } finally {
    for (const id of ids) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    client.destroy();
    await server.kill();
    await freeSandboxes(dataDir);
    await net.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
