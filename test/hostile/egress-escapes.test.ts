// Egress escapes, tried from inside: an app with every capability (["ALL"]: raw sockets,
// IP_HDRINCL) in a MicroVM with INTERNET_EGRESS, and one with no egress ([]), try to get packets
// out where their egress does not reach: forged source addresses, raw packets to the host and the
// private network, IPv6 to the host and out, DNS straight to a resolver that is not theirs (the
// test DNS server, the host's), the resolver address used for other ports, the metadata and
// link-local range, and ICMP. Each attempt must fail, and the other side must have received
// nothing: the test network counts what enters its namespaces (test/support/test-network.ts),
// its DNS server logs every query, and a host service on every address logs every connection.
// Controls show each tool works (raw ICMP to the MicroVM's own loopback, a DNS query through its
// resolver). Outcomes go to docs/reliability.md (area "egress").

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { GetMicrovmCommand, RunMicrovmCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
import { within } from "../support/deadline.js";
import { buildEgressProbeImage, egressDiagnosis, probeCaller, type ProbeAnswer } from "../support/egress-probe-app.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { hostOwnAddresses, linkLocalOf, startTestNetwork, type TestNetwork } from "../support/test-network.js";
import { record } from "./report.js";

const managed = (name: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${name}`;
const SHORT = 2000;

describe("egress escapes", { timeout: 1_200_000 }, () => {
  let net: TestNetwork;
  let dataDir: string;
  let server: ServerProcess;
  let client: LambdaMicrovmsClient;
  let call: ReturnType<typeof probeCaller>;
  let hostService: Server;
  let hostPort: number;
  const hostConnections: string[] = [];
  const sockets = new Set<Socket>();
  /** open: INTERNET_EGRESS; closed: []. Both with every capability. */
  const vm = { open: "", closed: "" };
  const addressOf: Record<string, string> = {};
  const gatewayOf = (ip: string) => ip.replace(/\d+$/, (n) => String(Number(n) - 1));

  /** Attempts made in the current test, for the report. */
  let tries = 0;
  const py = (id: string, probe: string, params: Record<string, string | number>) => (tries++, call(id, "python", probe, { timeout: SHORT, ...params }));
  const node = (id: string, probe: string, params: Record<string, string | number>) => (tries++, call(id, "node", probe, { timeout: SHORT, ...params }));
  const report = (attempt: string, outcome: string) => {
    record("egress", attempt, outcome, { attempts: tries });
    tries = 0;
  };
  /** Runs `attempts`, then checks the test network and the host service received nothing; `counters` may name counters allowed to grow. */
  const nothingArrives = async (what: string, attempts: () => Promise<void>) => {
    const counters = await net.counters();
    const events = net.events().length;
    const queries = net.dnsQueries().length;
    const host = hostConnections.length;
    await attempts();
    // Give a packet in flight the time to land before counting (the attempts' own deadlines are longer).
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await net.counters(), counters, `${what}: packets entered the test network`);
    assert.deepEqual(net.events().slice(events), [], `${what}: a test service got something`);
    assert.deepEqual(net.dnsQueries().slice(queries), [], `${what}: the test DNS server got a query`);
    assert.deepEqual(hostConnections.slice(host), [], `${what}: the host service got a connection`);
    // Control: the open MicroVM's egress is still in force (so "nothing arrived" is not a MicroVM cut off altogether).
    const page = await call(vm.open, "python", "fetch", { url: net.internet.webUrlByAddress, timeout: SHORT });
    assert.equal(page.status, 200, `control after ${what}: the open MicroVM still fetches the test page: ${JSON.stringify(page)} (${egressDiagnosis(addressOf[vm.open]!)})`);
  };
  const failed = (a: ProbeAnswer, what: string) => assert.equal(a.ok, false, `${what} should fail, got ${JSON.stringify(a)}`);

  before(async () => {
    net = await startTestNetwork();
    // A host service on every address, IPv4 and IPv6, as sshd or a database would be.
    hostService = createServer((s) => {
      hostConnections.push(`${s.remoteAddress} -> ${s.localAddress}`);
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.end("host service\n");
    });
    await within(10_000, "the host service to listen", new Promise<void>((r) => hostService.listen(0, "::", () => r())));
    hostPort = (hostService.address() as { port: number }).port;
    dataDir = tempDir();
    server = await spawnServer(dataDir, { builds: true, args: ["--dns-resolvers", net.resolvers.join(",")] });
    client = sdkClient(server.url, readCredentials(dataDir));
    call = probeCaller({ endpointPort: server.endpointPort, dataDir, client });
    const image = await buildEgressProbeImage(client, "escape-probe", { additionalOsCapabilities: ["ALL"] });
    for (const [k, egress] of [["open", [managed("INTERNET_EGRESS")]], ["closed", []]] as const) {
      const out = await client.send(new RunMicrovmCommand({ imageIdentifier: image, ingressNetworkConnectors: [managed("HTTP_INGRESS")], egressNetworkConnectors: [...egress] }));
      vm[k] = out.microvmId!;
    }
    for (const id of Object.values(vm)) {
      await eventually(async () => ((await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state === "RUNNING" ? true : undefined), `${id} to run`, 180_000);
      const who = await node(id, "whoami", {});
      assert.ok(who.ok && who.addresses!.length > 0, JSON.stringify(who));
      addressOf[id] = who.addresses![0]!;
    }
    // Controls: raw sockets work inside (ICMP to the MicroVM's own loopback), and the open MicroVM's resolver answers.
    for (const id of Object.values(vm)) {
      const ping = await py(id, "raw", { kind: "icmp", dst: "127.0.0.1" });
      assert.equal(ping.ok, true, `control: raw ICMP to its own loopback in ${id}: ${JSON.stringify(ping)}`);
    }
    const dns = await py(vm.open, "dns", { server: "169.254.169.253", name: net.internet.webName });
    assert.deepEqual(dns.answers, [net.internet.webAddress], `control: the open MicroVM's resolver answers: ${JSON.stringify(dns)}`);
    // Control: the counters see what a MicroVM legitimately sends (a fetch with INTERNET_EGRESS is a SYN into the test internet).
    const syns = (await net.counters())["internet.syns"]!;
    const page = await py(vm.open, "fetch", { url: net.internet.webUrlByAddress });
    assert.equal(page.status, 200, `control: the open MicroVM fetches the test page: ${JSON.stringify(page)}`);
    assert.ok((await net.counters())["internet.syns"]! > syns, "control: the test internet counted the fetch's SYN");
    tries = 0;
  });
  after(async () => {
    for (const id of Object.values(vm)) if (id) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    client?.destroy();
    await server?.kill();
    if (dataDir) await freeSandboxes(dataDir);
    for (const s of sockets) s.destroy();
    if (hostService) await within(5_000, "the host service to close", new Promise<void>((r) => hostService.close(() => r())));
    await net?.close();
  });

  test("forged source addresses: raw UDP and TCP SYNs claiming another MicroVM's, the host's, the private network's or a public address never arrive", async () => {
    for (const id of Object.values(vm)) {
      const other = addressOf[Object.values(vm).find((o) => o !== id)!]!;
      const sources: [string, string][] = [
        [other, "another MicroVM's address"],
        [gatewayOf(addressOf[id]!), "its gateway (the host)"],
        [net.internet.hostAddress, "the host's NAT address"],
        [net.private.hostAddress, "the host's private-network address"],
        ["10.77.200.9", "a private address"],
        ["198.51.100.250", "a public address"],
      ];
      for (const [src, what] of sources) {
        await nothingArrives(`forged ${what} from ${id}`, async () => {
          for (const [dst, port] of [[net.internet.udpEchoAddress, net.internet.udpEchoPort], [net.private.serviceAddress, net.private.udpEchoPort]] as const) {
            const sent = await py(id, "raw", { kind: "udp-spoof", src, dst, port, text: `forged-${randomBytes(4).toString("hex")}` });
            assert.ok(sent.ok || sent.error, JSON.stringify(sent));
          }
          for (const [dst, port] of [[net.internet.webAddress, net.internet.webPort], [net.private.serviceAddress, net.private.grantedPort], [net.private.serviceAddress, net.private.otherPort]] as const) {
            await py(id, "raw", { kind: "tcp-syn-spoof", src, dst, port });
          }
        });
      }
    }
    report("raw UDP and TCP SYNs with a forged source (another MicroVM, the host, private and public addresses), with every capability", "dropped: nothing entered the test internet or private network");
  });

  test("raw sockets to the host and the private ranges: ICMP echoes and hand-made SYNs from the MicroVM's own address get nowhere", async () => {
    for (const id of Object.values(vm)) {
      const me = addressOf[id]!;
      await nothingArrives(`raw packets from ${id}`, async () => {
        for (const dst of [gatewayOf(me), net.internet.hostAddress, net.private.hostAddress, ...hostOwnAddresses().v4, net.private.serviceAddress, net.internet.webAddress, "169.254.169.254", "169.254.169.253"]) {
          failed(await py(id, "raw", { kind: "icmp", dst }), `ICMP echo from ${id} to ${dst}`);
        }
        for (const [dst, port] of [[gatewayOf(me), hostPort], [net.private.serviceAddress, net.private.otherPort], [net.private.serviceAddress, net.private.grantedPort]] as const) {
          await py(id, "raw", { kind: "tcp-syn-spoof", src: me, dst, port });
        }
      });
    }
    report("raw sockets: ICMP echoes to the host, the private network, the test internet and the link-local addresses; hand-made TCP SYNs (IP_HDRINCL) from the MicroVM's own address to the host and the private network", "no reply; nothing arrived");
  });

  test("IPv6: no route to the host's addresses (global and link-local) or out", async () => {
    for (const id of Object.values(vm)) {
      await nothingArrives(`IPv6 from ${id}`, async () => {
        const own = hostOwnAddresses();
        const linkLocal = linkLocalOf(gatewayOf(addressOf[id]!));
        for (const host of [...own.v6, ...(linkLocal ? [linkLocal] : []), "2001:db8::1", ...own.v4.map((a) => `::ffff:${a}`), `::ffff:${gatewayOf(addressOf[id]!)}`]) {
          failed(await py(id, "connect", { host, port: hostPort }), `TCP from ${id} to [${host}]:${hostPort}`);
          failed(await node(id, "connect", { host, port: hostPort }), `TCP (Node) from ${id} to [${host}]:${hostPort}`);
        }
        for (const dst of ["ff02::1", ...own.v6, ...(linkLocal ? [linkLocal] : []), "2001:db8::1"]) failed(await py(id, "raw", { kind: "icmp6", dst }), `ICMPv6 echo from ${id} to ${dst}`);
      });
    }
    report("IPv6: TCP and ICMPv6 to the host's global addresses and its veth's link-local address, all-nodes multicast, a global address out, v4-mapped host addresses", "failed; the host service got nothing");
  });

  test("DNS tunnelling: UDP 53 straight to any resolver but its own (the test DNS server, the host's, anything else), and TCP 53 to the host or private addresses, fail and are never seen; without egress TCP 53 to a public resolver fails too", async () => {
    const name = () => `t${randomBytes(6).toString("hex")}.tunnel.test`;
    for (const id of Object.values(vm)) {
      const gateway = gatewayOf(addressOf[id]!);
      await nothingArrives(`direct DNS from ${id}`, async () => {
        const resolvers = hostOwnAddresses().resolvers;
        for (const server of [net.internet.dnsAddress, ...resolvers, gateway, net.private.serviceAddress, "198.51.100.250"]) {
          failed(await py(id, "dns", { server, name: name(), proto: "udp" }), `DNS over UDP from ${id} to ${server}`);
          failed(await node(id, "dns", { server, name: name(), proto: "udp" }), `DNS (Node) over UDP from ${id} to ${server}`);
        }
        const tcpServers = id === vm.open ? [...resolvers, gateway, net.private.serviceAddress] : [net.internet.dnsAddress, ...resolvers, gateway, net.private.serviceAddress];
        for (const server of tcpServers) {
          failed(await py(id, "dns", { server, name: name(), proto: "tcp" }), `DNS over TCP from ${id} to ${server}`);
          failed(await node(id, "dns", { server, name: name(), proto: "tcp" }), `DNS (Node) over TCP from ${id} to ${server}`);
        }
      });
    }
    report("DNS straight to a resolver that is not the MicroVM's: UDP 53 to the test DNS server, the host's resolver, the gateway, private and public addresses; TCP 53 to the host and private addresses (and, without egress, to the public test DNS server)", "failed; the DNS server logged no query");
    // Without egress, the resolver itself does not answer, so it carries nothing out either.
    await nothingArrives("DNS through the resolver without egress", async () => {
      for (const proto of ["udp", "tcp"]) failed(await py(vm.closed, "dns", { server: "169.254.169.253", name: name(), proto }), `the resolver over ${proto} without egress`);
    });
    report("DNS through 169.254.169.253 from a MicroVM without egress", "no answer; nothing forwarded");
    // With INTERNET_EGRESS, TCP to a public address is internet egress whatever the port, as on AWS
    // (DNS over TCP to a public resolver is no more a tunnel than DNS over HTTPS on 443): it arrives, NATed.
    const queries = net.dnsQueries().length;
    const n = name();
    const tcp = await py(vm.open, "dns", { server: net.internet.dnsAddress, name: n, proto: "tcp" });
    assert.equal(tcp.rcode, 3, `TCP 53 to a public resolver with INTERNET_EGRESS is internet TCP: ${JSON.stringify(tcp)}`);
    assert.deepEqual(net.dnsQueries().slice(queries).map((q) => `${q.name} from ${q.from}`), [`${n} from ${net.internet.hostAddress}`], "it arrives from the host's NAT address");
    report("DNS over TCP to a public resolver with INTERNET_EGRESS", "reaches it from the host's NAT address: TCP to public addresses is what INTERNET_EGRESS grants (as DNS over HTTPS would); UDP is not");
  });

  test("the resolver address reaches DNS only: its other TCP and UDP ports give nothing", async () => {
    for (const id of Object.values(vm)) {
      await nothingArrives(`the resolver's other ports from ${id}`, async () => {
        for (const port of [22, 80, 443, 8080, 5432]) {
          failed(await py(id, "connect", { host: "169.254.169.253", port }), `TCP from ${id} to 169.254.169.253:${port}`);
        }
        for (const port of [123, 7, 5353]) {
          failed(await py(id, "connect", { host: "169.254.169.253", port, proto: "udp", send: "not dns" }), `UDP from ${id} to 169.254.169.253:${port}`);
        }
        // A DNS-shaped query to the resolver on another port.
        failed(await py(id, "dns", { server: "169.254.169.253", port: 5432, name: net.internet.webName }), `DNS to 169.254.169.253:5432 from ${id}`);
      });
    }
    report("the resolver 169.254.169.253 used for other ports (TCP 22/80/443/8080/5432, UDP 123/7/5353)", "failed");
  });

  // 169.254.169.254:80 is the MicroVM's own metadata service (test/e2e/execution-role.test.ts and
  // test/hostile/privilege-escalation.test.ts try it); every other port and address here is nothing.
  test("the metadata and link-local range: nothing answers but the metadata service on 169.254.169.254:80", async () => {
    for (const id of Object.values(vm)) {
      await nothingArrives(`link-local from ${id}`, async () => {
        for (const [host, port] of [["169.254.169.254", 443], ["169.254.169.254", 8080], ["169.254.169.123", 123], ["169.254.0.1", 80], ["169.254.170.2", 80], ["169.254.255.254", 22]] as const) {
          failed(await py(id, "connect", { host, port }), `TCP from ${id} to ${host}:${port}`);
        }
        failed(await py(id, "connect", { host: "169.254.169.123", port: 123, proto: "udp" }), `UDP (NTP) from ${id} to 169.254.169.123`);
      });
    }
    report("the metadata address 169.254.169.254 on other ports than its service's 80, and other link-local addresses (ECS 169.254.170.2, NTP 169.254.169.123)", "failed");
  });

  test("ICMP out: an echo to the test internet, even with INTERNET_EGRESS, gets no reply and never arrives", async () => {
    await nothingArrives("ICMP to the internet", async () => {
      for (const id of Object.values(vm)) failed(await py(id, "raw", { kind: "icmp", dst: net.internet.webAddress }), `ICMP echo from ${id} to ${net.internet.webAddress}`);
    });
    report("ICMP echo to the test internet with INTERNET_EGRESS (egress is TCP, and DNS through the resolver)", "no reply; nothing arrived");
  });
});
