// Resource abuse inside one MicroVM while a neighbour serves: a CPU spinner,
// a fork bomb, a memory hog past the MicroVM's limit and a disk filler. The
// neighbour keeps answering (its latency is measured during each abuse), the
// host stays healthy, and the abuser is contained: one that outgrows its
// memory is TERMINATED with the reason in its stateReason; one that fills its
// disk gets ENOSPC, and its stateReason says so while the disk stays full.

import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, RunMicrovmCommand } from "@aws-sdk/client-lambda-microvms";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { within } from "../support/deadline.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";
import { record } from "./report.js";

const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";
/** The smallest size: 512 MiB baseline, bursting to 2048 MiB (its cgroup limit) and 1 vCPU. */
const MEMORY_MIB = 512;
const PEAK_MIB = 2048;
const DISK_MIB = 64;

/** One GET to the neighbour; its latency in ms, or undefined when it failed. */
function probe(ip: string): Promise<number | undefined> {
  const started = performance.now();
  const answered = new Promise<number | undefined>((resolve) => {
    const req = request({ host: ip, port: 8080, path: "/", agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode === 200 ? performance.now() - started : undefined));
    });
    req.on("error", () => resolve(undefined));
    req.on("timeout", () => req.destroy());
    req.end();
  });
  // The socket timeout covers a silent neighbour; this covers one that starts an answer and never ends it.
  return within(10_000, `the neighbour at ${ip} to answer`, answered).catch(() => undefined);
}

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

describe("resource abuse", { timeout: 900_000 }, () => {
  let t: TestPlatform;
  const run = async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:abuse", ingressNetworkConnectors: [SHELL] }));
    await eventually(async () => ((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }))).state === "RUNNING" ? true : undefined), "RUNNING", 60_000);
    return microvmId!;
  };
  const ipOf = (id: string) => JSON.parse(readFileSync(join(t.dataDir, "microvms", id, "sandbox.json"), "utf8")).sandboxIp as string;
  let neighbour: string;

  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE, microvmDiskMiB: DISK_MIB });
    const zip = join(tempDir("lmvm-abuse-"), "app.zip");
    writeFileSync(zip, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN mkdir -p /srv && echo ok > /srv/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/srv\"]\n" }]));
    await t.client.send(new CreateMicrovmImageCommand({
      name: "abuse", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R",
      codeArtifact: { uri: `file://${zip}` }, resources: [{ minimumMemoryInMiB: MEMORY_MIB }],
    }));
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "abuse" }))).state === "CREATED" ? true : undefined), "the build", 300_000);
    neighbour = await run();
  });
  after(() => t.stop());

  /**
   * Runs `script` in a fresh abuser while probing the neighbour; returns the
   * neighbour's latencies, the abuser, and the stateReasons it showed meanwhile.
   */
  const during = async (script: string) => {
    const abuser = await run();
    const latencies: number[] = [];
    const reasons = new Set<string>();
    let failures = 0;
    let done = false;
    const abuse = lmvm(["exec", abuser, "--data-dir", t.dataDir, "--endpoint-url", t.platform.url, "--", "sh", "-c", script]).finally(() => (done = true));
    const started = Date.now();
    for (let i = 0; !done && Date.now() - started < 20_000; i++) {
      const ms = await probe(ipOf(neighbour));
      if (ms === undefined) failures++;
      else latencies.push(ms);
      if (i % 5 === 0) {
        const reason = (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: abuser }))).stateReason;
        if (reason) reasons.add(reason);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // Each abuse ends itself within about 10 s (the bomb stops forking after 8): a minute past that, the exec is what hung.
    await within(90_000, `lmvm exec of the abuse (${script.slice(0, 60)}…) to end`, abuse);
    return { abuser, latencies, failures, reasons: [...reasons] };
  };

  const check = (what: string, r: { latencies: number[]; failures: number }, outcome: string) => {
    assert.equal(r.failures, 0, `the neighbour kept answering during ${what}`);
    assert.ok(r.latencies.length >= 3, `the neighbour was probed during ${what}`);
    const p50 = percentile(r.latencies, 50);
    const p99 = percentile(r.latencies, 99); // reported, not asserted: timings on shared machines are noise
    record("abuse", what, outcome, { "neighbour probes": r.latencies.length, "neighbour p50 ms": p50.toFixed(1), "neighbour p99 ms": p99.toFixed(1), "neighbour failures": r.failures });
  };

  test("a CPU spinner is held to its vCPU and reported; the neighbour keeps answering", async () => {
    const r = await during("timeout 8 sh -c 'while :; do :; done' & timeout 8 sh -c 'while :; do :; done'; wait; true");
    const reported = r.reasons.find((x) => /using all the CPU it may \(1 vCPU\)/.test(x));
    assert.ok(reported, `the abuser's stateReason said it was held at its CPU limit; it said: ${JSON.stringify(r.reasons)}`);
    check("CPU spinner (2 busy loops, 8 s, in a 1-vCPU MicroVM)", r, `held by the CPU quota; RUNNING with "${reported.slice(0, 70)}…"`);
    assert.equal((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: r.abuser }))).state, "RUNNING");
  });

  test("a fork bomb stays inside its MicroVM", async () => {
    // Forks without bound for 8 s, then the bomb's own processes stop forking (a shell builtin test of a
    // flag file, which needs no fork) and die out. (A bomb left to itself ends only when its branches
    // happen to die out at the pids limit: 2 to 4 minutes on these machines, the exec waiting on them.)
    const r = await during("rm -f /tmp/stop; sleep 8 & s=$!; bomb() { [ -e /tmp/stop ] || { bomb | bomb & }; }; bomb 2>/dev/null; wait $s; : > /tmp/stop; true");
    check("fork bomb (8 s)", r, `contained in its sandbox; stateReasons meanwhile: ${r.reasons.map((x) => `"${x.slice(0, 50)}…"`).join(", ") || "none"}`);
    const state = (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: r.abuser }))).state;
    assert.ok(state === "RUNNING" || state === "TERMINATED", state);
  });

  test("a memory hog past its limit is killed and its MicroVM TERMINATED with the reason", async () => {
    const r = await during(`dd if=/dev/zero of=/dev/shm/fill bs=1M count=${PEAK_MIB + 512} 2>&1; sleep 2`);
    const ended = await eventually(async () => {
      const vm = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: r.abuser }));
      return vm.state === "TERMINATED" ? vm : undefined;
    }, "the abuser to be TERMINATED", 30_000);
    assert.match(ended.stateReason ?? "", new RegExp(`out of memory.*${PEAK_MIB} MiB`));
    assert.ok(!existsSync(`/sys/fs/cgroup/memory/${r.abuser}`), "the dead sandbox's cgroups are removed");
    check(`memory hog (${PEAK_MIB + 512} MiB into a MicroVM of ${PEAK_MIB} MiB peak)`, r, `killed; TERMINATED: "${ended.stateReason}"`);
    assert.equal((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: neighbour }))).state, "RUNNING");
  });

  test("a disk filler gets ENOSPC at its MicroVM's disk limit; its stateReason says so until it frees space", async () => {
    const state = (id: string) => t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
    // Holds the full disk long enough for the server's periodic check (every 3 s) to see it.
    const r = await during(`dd if=/dev/zero of=/fill bs=1M count=${DISK_MIB * 4} 2>&1; sleep 7`);
    const full = await state(r.abuser);
    assert.equal(full.state, "RUNNING", "a full disk does not stop the MicroVM");
    assert.match(full.stateReason ?? "", new RegExp(`disk is full.*${DISK_MIB} MiB.*ENOSPC`));
    const disk = join(t.dataDir, "microvms", r.abuser, "sandbox", "disk.img");
    const hostBytes = statSync(disk).blocks * 512;
    assert.ok(hostBytes <= (DISK_MIB + 8) * 1024 * 1024, `the host holds ${hostBytes} bytes for a ${DISK_MIB} MiB disk`);
    const write = await lmvm(["exec", r.abuser, "--data-dir", t.dataDir, "--endpoint-url", t.platform.url, "--", "sh", "-c", "echo more > /more"]);
    assert.notEqual(write.code, 0, "a further write fails");
    assert.match(write.stderr + write.stdout, /No space left on device/);
    const freed = await lmvm(["exec", r.abuser, "--data-dir", t.dataDir, "--endpoint-url", t.platform.url, "--", "sh", "-c", "rm /fill && echo fine > /more && cat /more && mkdir /own && cp /bin/busybox /own/busybox && /own/busybox echo ran-from-its-disk"]);
    assert.equal(freed.stdout.trim(), "fine\nran-from-its-disk", `after deleting, writes work, and programs written to the disk run: ${freed.stderr}`);
    await eventually(async () => ((await state(r.abuser)).stateReason === undefined ? true : undefined), "the full-disk reason to clear", 15_000);
    check(`disk filler (${DISK_MIB * 4} MiB into a ${DISK_MIB} MiB disk)`, r, `ENOSPC; host file ${(hostBytes / 1024 / 1024).toFixed(0)} MiB; RUNNING with "${full.stateReason?.slice(0, 60)}…", cleared once freed`);
    assert.equal((await state(neighbour)).state, "RUNNING");
  });
});
