// additionalOsCapabilities and sizes, in real sandboxes. Two images on the
// debian12 base, each running a Python app (:8081, ctypes calls into libc) and
// a Node app (:8080, child_process and util-linux) that try what the
// capabilities decide: sethostname, /etc/machine-id, mounts (tmpfs, bind,
// overlay), FUSE, eBPF, raw sockets, network and container namespaces. One image has the
// standard set, the other ["ALL"]. A shell exec'd into each MicroVM gets the
// app's set, also after a suspend and resume. The same MicroVMs show sizes:
// the guest's MemTotal and CPU count, the sandbox's cgroup limits (peak) and
// disk, and what the record reserves (baseline).

import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES } from "../../src/core/index.js";
import type { SandboxRecord } from "../../src/runtime/index.js";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { within } from "../support/deadline.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";

const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";
const MIB = 1024 * 1024;

const PYTHON_APP = String.raw`
# Tries, from Python, what additionalOsCapabilities decides: ctypes calls into libc, each answered "ok" or its errno's name.
import ctypes, errno, json, os, platform, select, socket, struct, tempfile
from http.server import BaseHTTPRequestHandler, HTTPServer

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MS_BIND, MNT_DETACH = 4096, 2
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, 0x40000000
SYS_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]

def errname(e):
    return errno.errorcode.get(e, str(e))

def call(rc):
    return "ok" if rc == 0 else errname(ctypes.get_errno())

def in_child(fn):
    """Runs fn in a forked child, as namespaces change the process that makes them."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            out = fn()
        except OSError as e:
            out = errname(e.errno)
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = os.read(r, 100).decode()
    os.close(r)
    return out

def mount(source, target, fstype, flags=0, data=None):
    return call(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None))

def tmpfs():
    d = tempfile.mkdtemp()
    rc = mount("none", d, "tmpfs")
    if rc == "ok":
        open(os.path.join(d, "f"), "w").write("x")
        libc.umount2(d.encode(), MNT_DETACH)
    return rc

def bind():
    src, dst = tempfile.mkdtemp(), tempfile.mkdtemp()
    open(os.path.join(src, "marker"), "w").write("x")
    rc = mount(src, dst, None, MS_BIND)
    if rc == "ok":
        rc = "ok" if os.path.exists(os.path.join(dst, "marker")) else "bind shows nothing"
        libc.umount2(dst.encode(), MNT_DETACH)
    return rc

def overlay():
    """An overlay mount on a tmpfs, as a container runtime makes a container's root."""
    d = tempfile.mkdtemp()
    rc = mount("none", d, "tmpfs")
    if rc != "ok":
        return rc
    for sub in ("lower", "upper", "work", "merged"):
        os.mkdir(os.path.join(d, sub))
    open(os.path.join(d, "lower", "f"), "w").write("x")
    rc = mount("overlay", os.path.join(d, "merged"), "overlay", 0, f"lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work")
    if rc == "ok":
        rc = "ok" if os.path.exists(os.path.join(d, "merged", "f")) else "overlay shows nothing"
    libc.umount2(d.encode(), MNT_DETACH)
    return rc

def fuse():
    """Mounts a FUSE filesystem served by this process: "ok" when the kernel then sends it FUSE_INIT (opcode 26)."""
    fd = os.open("/dev/fuse", os.O_RDWR)
    d = tempfile.mkdtemp()
    rc = mount("probe", d, "fuse", 0, f"fd={fd},rootmode=40000,user_id=0,group_id=0")
    if rc == "ok":
        ready, _, _ = select.select([fd], [], [], 5)
        opcode = struct.unpack_from("<II", os.read(fd, 65536))[1] if ready else None
        rc = "ok" if opcode == 26 else f"no FUSE_INIT ({opcode})"
        libc.umount2(d.encode(), MNT_DETACH)
    os.close(fd)
    return rc

def bpf():
    attr = ctypes.create_string_buffer(struct.pack("<IIII", 2, 4, 4, 1), 128)  # an array map: 4-byte keys and values, 1 entry
    fd = libc.syscall(SYS_BPF, 0, attr, 128)  # BPF_MAP_CREATE
    if fd >= 0:
        os.close(fd)
        return "ok"
    return errname(ctypes.get_errno())

def raw_socket():
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()  # what ping needs: CAP_NET_RAW
    return "ok"

def machine_id():
    with open("/etc/machine-id", "w") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    return "ok"

def sethostname():
    name = socket.gethostname().encode()  # the name it has: the call's permission is what is tried
    return call(libc.sethostname(name, len(name)))

def probe():
    status = open("/proc/self/status").read()
    meminfo = open("/proc/meminfo").read()
    results = {"uid": os.getuid(), "capEff": status.split("CapEff:")[1].split()[0],
               "memTotalKiB": int(meminfo.split("MemTotal:")[1].split()[0]), "cpus": os.cpu_count()}
    for name, fn in [("sethostname", sethostname), ("machineId", machine_id), ("rawSocket", raw_socket), ("mountTmpfs", tmpfs), ("mountBind", bind), ("mountOverlay", overlay), ("fuse", fuse), ("bpf", bpf)]:
        try:
            results[name] = fn()
        except OSError as e:
            results[name] = errname(e.errno)
    results["unshareNet"] = in_child(lambda: call(libc.unshare(CLONE_NEWNET)))
    results["unshareContainer"] = in_child(lambda: call(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID)))
    return results

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(probe()).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("0.0.0.0", 8081), Handler).serve_forever()
`;

const NODE_APP = String.raw`
// Tries, from Node, what additionalOsCapabilities decides, through child_process and the
// system's own tools (util-linux); each answered "ok", or "EPERM" when the tool says it was not permitted.
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const http = require("node:http");

function tool(argv) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8", timeout: 10000 });
  if (r.status === 0) return "ok";
  const said = (r.stderr || r.stdout || String(r.error)).trim();
  return /not permitted|permission denied|must be root/i.test(said) ? "EPERM" : said;
}
function probe() {
  const results = {
    uid: process.getuid(),
    capEff: /^CapEff:\s*(\S+)/m.exec(fs.readFileSync("/proc/self/status", "utf8"))[1],
    memTotalKiB: os.totalmem() / 1024,
    cpus: os.cpus().length,
  };
  results.sethostname = tool(["hostname", os.hostname()]);
  try {
    fs.writeFileSync("/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    results.machineId = "ok";
  } catch (err) {
    results.machineId = err.code;
  }
  const dir = () => fs.mkdtempSync("/tmp/node-probe-");
  const t = dir();
  results.mountTmpfs = tool(["mount", "-t", "tmpfs", "none", t]);
  if (results.mountTmpfs === "ok") spawnSync("umount", ["-l", t]);
  const [src, dst] = [dir(), dir()];
  fs.writeFileSync(src + "/marker", "x");
  results.mountBind = tool(["mount", "--bind", src, dst]);
  if (results.mountBind === "ok") {
    if (!fs.existsSync(dst + "/marker")) results.mountBind = "bind shows nothing";
    spawnSync("umount", ["-l", dst]);
  }
  results.unshareNet = tool(["unshare", "--net", "true"]);
  results.unshareContainer = tool(["unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--mount-proc", "true"]);
  return results;
}
http.createServer((req, res) => res.writeHead(200, { "content-type": "application/json", connection: "close" }).end(JSON.stringify(probe()))).listen(8080, "0.0.0.0");
`;

type Probe = Record<string, string | number>;

/** The /proc/<pid>/status hex mask of a list of capabilities (a capability's bit is its number, its place in ALL_CAPABILITIES). */
function mask(caps: readonly string[]): string {
  return caps.reduce((m, c) => m | (1n << BigInt(ALL_CAPABILITIES.indexOf(c))), 0n).toString(16).padStart(16, "0");
}

/** One GET on its own connection, closed after the answer, so the sandbox can be checkpointed afterwards. */
function probe(ip: string, port: number): Promise<Probe> {
  return within(60_000, `the app at ${ip}:${port} to answer`, new Promise((resolve, reject) => {
    const req = request({ host: ip, port, path: "/", agent: false, timeout: 30_000 }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => {
        res.socket.destroy(); // the apps close their side after each answer
        try {
          resolve(JSON.parse(body) as Probe);
        } catch {
          reject(new Error(`the app at ${ip}:${port} answered ${res.statusCode}: ${body}`));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`the app at ${ip}:${port} did not answer`)));
    req.on("error", reject);
    req.end();
  }));
}

/** A sandbox's cgroup limits as the host's kernel holds them: memory bytes, and CPU quota over period. */
function cgroupLimits(id: string): { memoryBytes: number; cpuQuota: number; cpuPeriod: number } {
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) {
    const [quota, period] = readFileSync(`/sys/fs/cgroup/${id}/cpu.max`, "utf8").trim().split(" ");
    return { memoryBytes: Number(readFileSync(`/sys/fs/cgroup/${id}/memory.max`, "utf8")), cpuQuota: Number(quota), cpuPeriod: Number(period) };
  }
  return {
    memoryBytes: Number(readFileSync(`/sys/fs/cgroup/memory/${id}/memory.limit_in_bytes`, "utf8")),
    cpuQuota: Number(readFileSync(`/sys/fs/cgroup/cpu/${id}/cpu.cfs_quota_us`, "utf8")),
    cpuPeriod: Number(readFileSync(`/sys/fs/cgroup/cpu/${id}/cpu.cfs_period_us`, "utf8")),
  };
}

describe("OS capabilities and sizes", { timeout: 900_000 }, () => {
  let t: TestPlatform;
  const vms: Record<"standard" | "all", string> = { standard: "", all: "" };
  const record = (id: string) => JSON.parse(readFileSync(join(t.dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
  const state = async (id: string) => (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  const until = (id: string, want: string) => eventually(async () => ((await state(id)) === want ? true : undefined), `${id} to be ${want}`, 120_000);
  /** The Python and the Node app's findings. */
  const probes = async (id: string) => ({ python: await probe(record(id).sandboxIp, 8081), node: await probe(record(id).sandboxIp, 8080) });
  const shell = async (id: string, script: string) => {
    const r = await lmvm(["exec", id, "--data-dir", t.dataDir, "--endpoint-url", t.platform.url, "--", "sh", "-c", script], {}, 60_000);
    return r.stdout + r.stderr;
  };
  // What the exec'd shell finds: its capabilities, and whether it may set the hostname and mount a tmpfs.
  const SHELL_PROBE = 'grep CapEff /proc/self/status; hostname "$(hostname)" 2>/dev/null && echo sethostname=ok || echo sethostname=failed; mkdir -p /tmp/m && mount -t tmpfs none /tmp/m 2>/dev/null && echo mount=ok && umount /tmp/m || echo mount=failed';

  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
    const zip = join(tempDir("lmvm-caps-"), "app.zip");
    writeFileSync(zip, makeZip([
      { name: "Dockerfile", content: 'FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js probe.py ./\nCMD ["sh", "-c", "python3 /app/probe.py & exec node /app/app.js"]\n' },
      { name: "app.js", content: NODE_APP },
      { name: "probe.py", content: PYTHON_APP },
    ]));
    const common = { baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${zip}` } };
    // The standard image asks for no size (the default); the ALL one for 300 MiB, which the smallest size (512 MiB) covers.
    await t.client.send(new CreateMicrovmImageCommand({ name: "caps-standard", ...common }));
    await t.client.send(new CreateMicrovmImageCommand({ name: "caps-all", ...common, additionalOsCapabilities: ["ALL"], resources: [{ minimumMemoryInMiB: 300 }] }));
    for (const name of ["caps-standard", "caps-all"]) {
      const built = await eventually(async () => {
        const image = await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: name }));
        return image.state === "CREATED" || image.state === "CREATE_FAILED" ? image : undefined;
      }, `the build of ${name}`, 400_000);
      if (built.state !== "CREATED") {
        const version = await t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
        assert.fail(`the build of ${name} failed: ${version.stateReason}`);
      }
    }
    for (const [key, name] of [["standard", "caps-standard"], ["all", "caps-all"]] as const) {
      vms[key] = (await t.client.send(new RunMicrovmCommand({ imageIdentifier: `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`, ingressNetworkConnectors: [SHELL] }))).microvmId!;
    }
    for (const id of Object.values(vms)) await until(id, "RUNNING");
  });
  after(() => t?.stop());

  test("without additionalOsCapabilities the app is root with Docker's standard set: sethostname, mounts, FUSE, eBPF and namespaces fail with EPERM, /etc/machine-id is writable (Python and Node); an exec'd shell has the same set", async () => {
    const { python, node } = await probes(vms.standard);
    const standard = mask(DEFAULT_CAPABILITIES);
    assert.equal(standard, "00000000a80425fb", "Docker's default set, NET_RAW included");
    for (const [app, found] of [["python", python], ["node", node]] as const) {
      assert.equal(found.uid, 0, `${app} runs as root`);
      assert.equal(found.capEff, standard, `${app}'s capabilities`);
      assert.equal(found.machineId, "ok", `${app} writes /etc/machine-id`);
      for (const denied of ["sethostname", "mountTmpfs", "mountBind", "unshareNet", "unshareContainer"]) assert.equal(found[denied], "EPERM", `${app}: ${denied}`);
    }
    for (const denied of ["mountOverlay", "fuse", "bpf"]) assert.equal(python[denied], "EPERM", `python: ${denied}`);
    assert.equal(python.rawSocket, "ok", "python opens a raw ICMP socket (NET_RAW is in the standard set)");
    const out = await shell(vms.standard, SHELL_PROBE);
    assert.match(out, new RegExp(`CapEff:\\s+${standard}`), out);
    assert.match(out, /sethostname=failed/, out);
    assert.match(out, /mount=failed/, out);
  });

  test('with ["ALL"] the app has every capability: sethostname, tmpfs, bind and overlay mounts, FUSE, network and container namespaces work (Python and Node), eBPF is ENOSYS in gVisor; an exec\'d shell has them too, also after a suspend and resume', async () => {
    const all = mask(ALL_CAPABILITIES);
    assert.equal(all, "000001ffffffffff");
    const check = async (when: string) => {
      const { python, node } = await probes(vms.all);
      for (const [app, found] of [["python", python], ["node", node]] as const) {
        assert.equal(found.uid, 0, `${app} runs as root`);
        assert.equal(found.capEff, all, `${app}'s capabilities ${when}`);
        for (const allowed of ["sethostname", "machineId", "mountTmpfs", "mountBind", "unshareNet", "unshareContainer"]) assert.equal(found[allowed], "ok", `${app}: ${allowed} ${when}`);
      }
      for (const allowed of ["mountOverlay", "fuse", "rawSocket"]) assert.equal(python[allowed], "ok", `python: ${allowed} ${when}`);
      assert.equal(python.bpf, "ENOSYS", "gVisor has no bpf(2), whatever the capabilities");
      const out = await shell(vms.all, SHELL_PROBE);
      assert.match(out, new RegExp(`CapEff:\\s+${all}`), out);
      assert.match(out, /sethostname=ok/, out);
      assert.match(out, /mount=ok/, out);
    };
    await check("after RunMicrovm");
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: vms.all }));
    await until(vms.all, "SUSPENDED");
    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: vms.all }));
    await until(vms.all, "RUNNING");
    await check("after a suspend and resume");
  });

  test("sizes: the guest sees the peak memory, the sandbox's cgroups hold the peak, its disk is the size's, and the host reserves the baseline", async () => {
    // gVisor's CPU count (--cpu-num-from-quota): the quota rounded up, at least 2, at most the host's cores.
    const cpusFor = (peak: number) => Math.max(2, Math.min(Math.ceil(peak), availableParallelism()));
    const sizes = [
      { id: vms.standard, what: "no resources: the default size", baseline: 2048, baselineVcpus: 1, peak: 8192, peakVcpus: 4, diskMiB: 8192 },
      { id: vms.all, what: "300 MiB asked: the smallest size", baseline: 512, baselineVcpus: 0.25, peak: 2048, peakVcpus: 1, diskMiB: 8192 },
    ];
    for (const s of sizes) {
      const { python, node } = await probes(s.id);
      for (const [app, found] of [["python", python], ["node", node]] as const) {
        assert.equal(found.memTotalKiB, s.peak * 1024, `${s.what}: ${app} sees the peak memory as MemTotal`);
        assert.equal(found.cpus, cpusFor(s.peakVcpus), `${s.what}: ${app}'s CPU count`);
      }
      const cg = cgroupLimits(record(s.id).sandboxId ?? s.id); // runsc names cgroups after the sandbox, one per incarnation
      assert.equal(cg.memoryBytes, s.peak * MIB, `${s.what}: the memory cgroup limit is the peak`);
      assert.equal(cg.cpuQuota / cg.cpuPeriod, s.peakVcpus, `${s.what}: the CPU quota is the peak vCPUs`);
      assert.equal(statSync(join(record(s.id).sandboxDir ?? join(t.dataDir, "microvms", s.id, "sandbox"), "disk.img")).size, s.diskMiB * MIB, `${s.what}: the sandbox's disk`);
      const limits = record(s.id).limits;
      assert.equal(limits.memoryMiB, s.baseline, `${s.what}: baseline memory (what the account's quota counts)`);
      assert.equal(limits.vcpus, s.baselineVcpus, `${s.what}: baseline vCPUs (what the host's CPU room reserves)`);
    }
    const version = await t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "caps-all", imageVersion: "1.0" }));
    assert.deepEqual(version.resources, [{ minimumMemoryInMiB: 300 }], "the image shows the resources as asked");
  });
});
