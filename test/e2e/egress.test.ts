// Outbound network from real MicroVMs (issue 13), against a test "internet" and a test "private
// network" in namespaces on this machine (test/support/test-network.ts), with a Node and a Python
// app driven through the endpoint as a user would (test/support/egress-probe-app.ts):
// INTERNET_EGRESS by name (through the resolver at 169.254.169.253, the server started with
// --dns-resolvers pointing at the test DNS server) and by address, behind the host's NAT address;
// no egress ([] and, under --default-egress none, none named); what no MicroVM ever reaches (the
// host, another MicroVM, the ungranted private network, link-local and metadata addresses, UDP
// other than DNS); a network connector made with the real CLI granting one TCP port of the private
// network; and the same egress after suspend and resume. One server (restarted once with
// --default-egress none), one image, six MicroVMs (at most four at once).

import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  GetMicrovmCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { within } from "../support/deadline.js";
import { buildEgressProbeImage, egressDiagnosis, probeCaller, type ProbeAnswer, type ProbeApp } from "../support/egress-probe-app.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { hostOwnAddresses, startTestNetwork, type TestNetwork } from "../support/test-network.js";

const managed = (name: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${name}`;
const HTTP_INGRESS = managed("HTTP_INGRESS");
const INTERNET_EGRESS = managed("INTERNET_EGRESS");
const APPS: ProbeApp[] = ["node", "python"];
/** Each attempt's own deadline inside the MicroVM: a blocked one fails fast or times out; either is a failure. */
const SHORT = 2000;

/** A TCP listener on every host address: the host's own services, which no MicroVM may reach. */
async function hostListener(): Promise<{ port: number; connections: string[]; close(): Promise<void> }> {
  const connections: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    connections.push(`${s.remoteAddress} -> ${s.localAddress}`);
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.end("host service\n");
  });
  await within(5_000, "the host listener to listen", new Promise<void>((r) => server.listen(0, "0.0.0.0", r)));
  return {
    port: (server.address() as { port: number }).port,
    connections,
    close: () => within(5_000, "the host listener to close", new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    })),
  };
}

describe("egress from MicroVMs", { timeout: 1_500_000 }, () => {
  let net: TestNetwork;
  let dataDir: string;
  let server: ServerProcess;
  let client: LambdaMicrovmsClient;
  let call: ReturnType<typeof probeCaller>;
  let host: Awaited<ReturnType<typeof hostListener>>;
  let image: string;
  let connectorArn: string;
  const env = () => ({ LMVM_DATA_DIR: dataDir });
  /** The MicroVMs: explicit INTERNET_EGRESS, none named (the default), [] (none), the private connector alone. */
  const vm: Record<"internet" | "unnamed" | "none" | "connector", string> = { internet: "", unnamed: "", none: "", connector: "" };
  const addressOf: Record<string, string> = {};

  const startServer = async (extra: string[] = []) => {
    server = await spawnServer(dataDir, { builds: true, args: ["--dns-resolvers", net.resolvers.join(","), ...extra] });
    client?.destroy();
    client = sdkClient(server.url, readCredentials(dataDir));
    call = probeCaller({ endpointPort: server.endpointPort, dataDir, client });
  };
  const state = async (id: string) => (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  const until = (id: string, want: string) => eventually(async () => ((await state(id)) === want ? true : undefined), `${id} to be ${want}`, 180_000);
  const run = async (egress: string[] | undefined) => {
    const out = await client.send(new RunMicrovmCommand({ imageIdentifier: image, ingressNetworkConnectors: [HTTP_INGRESS], ...(egress ? { egressNetworkConnectors: egress } : {}) }));
    await until(out.microvmId!, "RUNNING");
    return out.microvmId!;
  };
  const both = (id: string, probe: string, params: Record<string, string | number>) => Promise.all(APPS.map((app) => call(id, app, probe, params)));
  const failed = (answers: ProbeAnswer[], what: string) => {
    for (const a of answers) assert.equal(a.ok, false, `${what} from the ${a.app} app should fail, got ${JSON.stringify(a)}`);
  };
  const fetchBy = (id: string, url: string) => both(id, "fetch", { url, timeout: SHORT });

  before(async () => {
    net = await startTestNetwork();
    host = await hostListener();
    dataDir = tempDir();
    await startServer();
    image = await buildEgressProbeImage(client, "egress-probe");
    // A connector granting TCP 5432 of the private network, made with the real CLI.
    const created = await lmvm(["create-network-connector", "--name", "private-db", "--configuration", JSON.stringify({
      HostEgressConfiguration: {
        Destinations: [{ Cidr: net.private.cidr, Protocol: "tcp", PortRange: { From: net.private.grantedPort, To: net.private.grantedPort } }],
        NetworkProtocol: "IPv4", AssociatedComputeResourceTypes: ["MicroVm"],
      },
    })], env());
    assert.equal(created.code, 0, created.stderr);
    connectorArn = JSON.parse(created.stdout).Arn;
    await eventually(async () => {
      const got = await lmvm(["get-network-connector", "--identifier", connectorArn], env());
      const s = got.code === 0 ? JSON.parse(got.stdout).State : undefined;
      if (s === "FAILED") throw new Error(`the connector failed: ${got.stdout}`);
      return s === "ACTIVE" ? true : undefined;
    }, "the connector to be ACTIVE", 60_000);
    vm.internet = await run([INTERNET_EGRESS]);
    vm.unnamed = await run(undefined);
    vm.none = await run([]);
    vm.connector = await run([connectorArn]);
    for (const [, id] of Object.entries(vm)) {
      const who = await call(id, "node", "whoami", {});
      assert.ok(who.ok && who.addresses!.length > 0, JSON.stringify(who));
      addressOf[id] = who.addresses![0]!;
    }
  });
  after(async () => {
    for (const id of Object.values(vm)) if (id) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    client?.destroy();
    await server?.kill();
    if (dataDir) await freeSandboxes(dataDir);
    await host?.close();
    await net?.close();
  });

  test("with INTERNET_EGRESS, Node and Python fetch the test web page by name (resolved through 169.254.169.253) and by address, and the web server sees the host's NAT address", async () => {
    for (const id of [vm.internet, vm.unnamed]) {
      for (const r of await both(id, "resolvconf", {})) assert.match(r.text ?? "", /^nameserver 169\.254\.169\.253$/m, `${r.app}'s /etc/resolv.conf`);
      const before = net.requests().length;
      for (const url of [net.internet.webUrlByName, net.internet.webUrlByAddress]) {
        for (const r of await fetchBy(id, url)) {
          assert.equal(r.ok, true, `${r.app} fetching ${url}: ${JSON.stringify(r)} (${egressDiagnosis(addressOf[id]!)})`);
          assert.equal(r.status, 200);
          assert.match(r.body!, new RegExp(`^hello from the test internet \\(${net.internet.webAddress}\\); you are ${net.internet.hostAddress.replaceAll(".", "\\.")}$`, "m"));
        }
      }
      const seen = net.requests().slice(before);
      assert.equal(seen.length, 4, "two apps, by name and by address");
      for (const r of seen) assert.equal(r.remote, net.internet.hostAddress, "the web server sees the host's NAT address, never the MicroVM's");
      assert.ok(seen.some((r) => r.host === net.internet.webName) && seen.some((r) => r.host === net.internet.webAddress));
      for (const r of await both(id, "resolve", { name: net.internet.webName, timeout: SHORT })) assert.deepEqual(r.addresses, [net.internet.webAddress], `${r.app} resolving`);
    }
    // The forwarder asked the test DNS server (the --dns-resolvers) from the host.
    assert.ok(net.dnsQueries().some((q) => q.name === net.internet.webName && q.from === net.internet.hostAddress), JSON.stringify(net.dnsQueries()));
  });

  test("with egressNetworkConnectors [] nothing leaves: no page by name or by address, no DNS, no private network", async () => {
    const before = net.events().length;
    failed(await fetchBy(vm.none, net.internet.webUrlByAddress), "fetching by address");
    failed(await fetchBy(vm.none, net.internet.webUrlByName), "fetching by name");
    failed(await both(vm.none, "resolve", { name: net.internet.webName, timeout: SHORT }), "resolving");
    failed(await both(vm.none, "dns", { server: "169.254.169.253", name: net.internet.webName, timeout: SHORT }), "asking 169.254.169.253");
    failed(await both(vm.none, "connect", { host: net.private.serviceAddress, port: net.private.grantedPort, timeout: SHORT }), "the private network");
    assert.deepEqual(net.events().slice(before), [], "no service saw anything");
  });

  test("no MicroVM reaches the host's own addresses, another MicroVM, the ungranted private network, the metadata and link-local range, or UDP beyond DNS", async () => {
    const before = net.events().length;
    const hostBefore = host.connections.length;
    const own = hostOwnAddresses();
    const ids = Object.values(vm);
    await Promise.all(ids.map(async (id) => {
      const me = addressOf[id]!;
      const gateway = me.replace(/\d+$/, (n) => String(Number(n) - 1));
      const other = addressOf[ids.find((o) => o !== id)!]!;
      const targets: [string, number, string][] = [
        [gateway, host.port, "its gateway (the host end of its veth)"],
        [gateway, Number(new URL(server.url).port), "the control API's port on its gateway"],
        [gateway, server.endpointPort, "the endpoint proxy's port on its gateway"],
        [net.internet.hostAddress, host.port, "the host's test-internet address"],
        [net.private.hostAddress, host.port, "the host's private-network address"],
        ...own.v4.map((a): [string, number, string] => [a, host.port, "one of the host's own addresses"]),
        [other, 8080, "another MicroVM's app"],
        [net.private.serviceAddress, net.private.otherPort, "the private network's other port"],
        ["169.254.169.254", 8080, "the metadata address on a port other than 80"],
        ["169.254.169.254", 443, "the metadata address on HTTPS"],
        ["169.254.1.1", 80, "another link-local address"],
        ["169.254.169.253", 80, "the resolver's address on a port other than DNS"],
        ...own.resolvers.filter((r) => !r.includes(":")).map((r): [string, number, string] => [r, 53, "the host's own resolver over TCP"]),
      ];
      if (id !== vm.connector) targets.push([net.private.serviceAddress, net.private.grantedPort, "the private network without a connector"]);
      for (const [address, port, what] of targets) {
        failed(await both(id, "connect", { host: address, port, timeout: SHORT }), `${id} connecting to ${what} ${address}:${port}`);
      }
      // UDP: to the internet's echo service, to the private network, to the host's resolver: all blocked.
      for (const [address, port] of [[net.internet.udpEchoAddress, net.internet.udpEchoPort], [net.private.serviceAddress, net.private.udpEchoPort], ...own.resolvers.map((r) => [r, 53] as const)] as const) {
        failed(await both(id, "connect", { host: address, port, proto: "udp", send: `udp from ${id}`, timeout: SHORT }), `${id} sending UDP to ${address}:${port}`);
      }
    }));
    assert.deepEqual(host.connections.slice(hostBefore), [], "the host's service saw no connection");
    assert.deepEqual(net.events().slice(before), [], "no test service saw anything");
  });

  test("every MicroVM, with egress or none, reaches its own instance-metadata service at 169.254.169.254:80 (a token-less GET gets IMDSv2's 401)", async () => {
    for (const id of Object.values(vm)) {
      for (const r of await fetchBy(id, "http://169.254.169.254/latest/meta-data/")) {
        assert.equal(r.ok, true, `${r.app} in ${id}: ${JSON.stringify(r)} (${egressDiagnosis(addressOf[id]!)})`);
        assert.equal(r.status, 401, `${r.app} in ${id}`);
      }
    }
  });

  test("outbound UDP to the internet is blocked while DNS (UDP and TCP to 169.254.169.253) works", async () => {
    const before = net.events().length;
    failed(await both(vm.internet, "connect", { host: net.internet.udpEchoAddress, port: net.internet.udpEchoPort, proto: "udp", send: "udp out", timeout: SHORT }), "UDP to the internet");
    for (const proto of ["udp", "tcp"]) {
      for (const r of await both(vm.internet, "dns", { server: "169.254.169.253", name: net.internet.webName, proto, timeout: SHORT })) {
        assert.equal(r.ok, true, `${r.app} asking 169.254.169.253 over ${proto}: ${JSON.stringify(r)} (${egressDiagnosis(addressOf[vm.internet]!)})`);
        assert.deepEqual(r.answers, [net.internet.webAddress]);
      }
    }
    assert.deepEqual(net.events().slice(before), [], "the echo service got no datagram");
  });

  test("a connector made with the CLI granting the private network's TCP 5432 reaches that port and nothing else: not its other port, not UDP, not the internet", async () => {
    const before = net.events().length;
    for (const r of await both(vm.connector, "connect", { host: net.private.serviceAddress, port: net.private.grantedPort, timeout: SHORT })) {
      assert.equal(r.ok, true, `${r.app} connecting to ${net.private.serviceAddress}:${net.private.grantedPort}: ${JSON.stringify(r)} (${egressDiagnosis(addressOf[vm.connector]!)})`);
      assert.equal(r.data, `${net.private.banners[net.private.grantedPort]}\n`);
    }
    failed(await both(vm.connector, "connect", { host: net.private.serviceAddress, port: net.private.otherPort, timeout: SHORT }), "the other port");
    failed(await both(vm.connector, "connect", { host: net.private.serviceAddress, port: net.private.udpEchoPort, proto: "udp", timeout: SHORT }), "UDP to the private network");
    failed(await fetchBy(vm.connector, net.internet.webUrlByAddress), "the internet");
    const seen = net.events().slice(before);
    assert.deepEqual(seen.map((e) => `${e.kind} ${e.port}`), ["tcp 5432", "tcp 5432"], "the two apps' connections to 5432, and nothing else");
  });

  test("deleting a connector a MicroVM uses is refused (CLI)", async () => {
    const del = await lmvm(["delete-network-connector", "--identifier", connectorArn], env());
    assert.notEqual(del.code, 0, "deleting a connector a MicroVM uses is refused");
    assert.match(del.stderr, /in use|ResourceConflict|Conflict/i, del.stderr);
  });

  test("suspend and resume keep the same egress", async () => {
    for (const id of [vm.internet, vm.connector]) {
      await client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
      await until(id, "SUSPENDED");
      await client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
      await until(id, "RUNNING");
    }
    for (const r of await fetchBy(vm.internet, net.internet.webUrlByName)) assert.equal(r.ok, true, `${r.app} after resume: ${JSON.stringify(r)}`);
    failed(await both(vm.internet, "connect", { host: net.private.serviceAddress, port: net.private.grantedPort, timeout: SHORT }), "the private network after resume");
    for (const r of await both(vm.connector, "connect", { host: net.private.serviceAddress, port: net.private.grantedPort, timeout: SHORT })) assert.equal(r.ok, true, `${r.app} to 5432 after resume: ${JSON.stringify(r)}`);
    failed(await both(vm.connector, "connect", { host: net.private.serviceAddress, port: net.private.otherPort, timeout: SHORT }), "the other port after resume");
    failed(await fetchBy(vm.connector, net.internet.webUrlByAddress), "the internet after resume");
  });

  test("under lmvm server --default-egress none, a MicroVM that names no egress cannot reach the internet, by name or by address", async () => {
    for (const id of Object.values(vm)) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    for (const k of Object.keys(vm) as (keyof typeof vm)[]) vm[k] = "";
    await server.kill();
    await startServer(["--default-egress", "none"]);
    vm.unnamed = await run(undefined);
    const before = net.events().length;
    failed(await fetchBy(vm.unnamed, net.internet.webUrlByAddress), "fetching by address");
    failed(await fetchBy(vm.unnamed, net.internet.webUrlByName), "fetching by name");
    assert.deepEqual(net.events().slice(before), [], "the web server saw nothing");
    // INTERNET_EGRESS named explicitly still works under that default.
    vm.internet = await run([INTERNET_EGRESS]);
    for (const r of await fetchBy(vm.internet, net.internet.webUrlByName)) assert.equal(r.ok, true, `${r.app}: ${JSON.stringify(r)}`);
  });
});
