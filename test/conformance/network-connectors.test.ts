// The Lambda Core network-connector API on lmvm's API port, with signed
// requests: every operation, validation, idempotency, pagination, states,
// versions, binding into RunMicrovm's and builds' egress, and refusing to
// delete a connector in use. The runtime and builder are scripted
// (test/support/scripted.ts), as in the other conformance tests: what is
// checked is the API and the policy the core records; test/e2e/cli-network-connectors
// runs them through the real CLI with real sandboxes.

import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageBuildCommand, GetMicrovmImageCommand, ListMicrovmImageBuildsCommand,
  RunMicrovmCommand, TerminateMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import type { BuildJob, SnapshotBuild } from "../../src/core/index.js";
import { rejects } from "../support/assertions.js";
import { eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";
import { signedFetch, type RawResponse } from "../support/signed-fetch.js";

const PATH = "/2026-04-04/network-connectors";
const ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:network-connector:";
const INTERNET = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS";
const IMAGE_ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:app";

const host = (destinations: unknown[]) => ({ HostEgressConfiguration: { Destinations: destinations, NetworkProtocol: "IPv4", AssociatedComputeResourceTypes: ["MicroVm"] } });
const PG = host([{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 5432, To: 5432 } }]);

/** Records what each build was given, then behaves as ScriptedBuilder. */
class RecordingBuilder extends ScriptedBuilder {
  readonly jobs: BuildJob[] = [];
  override build(job: BuildJob, signal: AbortSignal): Promise<SnapshotBuild> {
    this.jobs.push(job);
    return super.build(job, signal);
  }
}

describe("network connectors (Lambda Core API)", () => {
  let t: TestPlatform;
  const builder = new RecordingBuilder();
  const runtime = new ScriptedRuntime();
  const call = (method: string, path: string, body?: unknown): Promise<RawResponse> => signedFetch(t.platform.url, t.credentials, method, path, body);
  const get = (id: string) => call("GET", `${PATH}/${encodeURIComponent(id)}`);
  const create = (name: string, configuration: unknown = PG, extra: Record<string, unknown> = {}) => call("POST", PATH, { Name: name, Configuration: configuration, ...extra });
  const settled = (id: string, want: (b: Record<string, unknown>) => boolean, what: string) =>
    eventually(async () => {
      const r = await get(id);
      return r.status === 200 && want(r.body) ? r.body : undefined;
    }, what, 20_000);
  const active = (id: string) => settled(id, (b) => b.State === "ACTIVE", `${id} ACTIVE`);
  const invalid = async (r: RawResponse, message: RegExp) => {
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.errorType, "InvalidParameterValueException");
    assert.equal(r.body.Type, "User");
    assert.match(String(r.body.message), message);
  };

  before(async () => {
    t = await startTestPlatform({ builder, runtime, rateLimits: { "*": 10_000 } });
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("app")));
    await builder.succeed();
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "app" }))).state === "CREATED" ? true : undefined), "image built");
  });
  after(() => t.stop());

  test("CreateNetworkConnector answers 202 PENDING; the connector becomes ACTIVE and Get finds it by id, name and ARN", async () => {
    const r = await create("pg", PG, { Tags: { team: "data" }, OperatorRole: "arn:aws:iam::000000000000:role/Operator" });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(r.body.State, "PENDING");
    assert.equal(r.body.Arn, `${ARN_PREFIX}pg`);
    assert.equal(r.body.Name, "pg");
    assert.equal(r.body.Version, 1);
    assert.match(String(r.body.Id), /^nc-[0-9a-f]{17}$/);
    assert.deepEqual(r.body.Configuration, PG);
    const done = await active("pg");
    assert.equal(done.StateReason, "Provisioned.");
    assert.ok(!Number.isNaN(Date.parse(String(done.LastModified))));
    for (const id of [String(r.body.Id), "pg", `${ARN_PREFIX}pg`]) {
      const g = await get(id);
      assert.equal(g.status, 200);
      assert.equal(g.body.Arn, `${ARN_PREFIX}pg`);
      assert.deepEqual(g.body.Tags, { team: "data" });
      assert.equal(g.body.OperatorRole, "arn:aws:iam::000000000000:role/Operator");
    }
    const missing = await get("nope");
    assert.equal(missing.status, 404);
    assert.equal(missing.errorType, "ResourceNotFoundException");
    assert.match(String(missing.body.message), /'nope' does not exist.*list-network-connectors/);
    const foreign = await get("arn:aws:lambda:eu-west-1:000000000000:network-connector:pg");
    assert.equal(foreign.status, 404);
  });

  test("bad input is an InvalidParameterValueException that says what to fix", async () => {
    await invalid(await create("bad", host([{ Cidr: "10.77.0.1/24", Protocol: "tcp" }])), /'10\.77\.0\.1\/24' has host bits set; the network is 10\.77\.0\.0\/24/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/33", Protocol: "tcp" }])), /not an IPv4 CIDR/);
    await invalid(await create("bad", host([{ Cidr: "fd00::/64", Protocol: "tcp" }])), /not an IPv4 CIDR.*IPv6 is not supported/);
    await invalid(await create("bad", host([{ Cidr: "10.077.0.0/24", Protocol: "tcp" }])), /not an IPv4 CIDR/);
    await invalid(await create("bad", host([{ Cidr: "127.0.0.0/8", Protocol: "tcp" }])), /loopback/);
    await invalid(await create("bad", host([{ Cidr: "169.254.169.254/32", Protocol: "tcp" }])), /link-local/);
    // A wide range that only contains the forbidden ones is refused too.
    await invalid(await create("bad", host([{ Cidr: "169.0.0.0/8", Protocol: "tcp" }])), /link-local/);
    await invalid(await create("bad", host([{ Cidr: "128.0.0.0/1", Protocol: "tcp" }])), /multicast and reserved/);
    await invalid(await create("bad", host([{ Cidr: "64.0.0.0/2", Protocol: "tcp" }])), /loopback/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/24", Protocol: "icmp", PortRange: { From: 1, To: 2 } }])), /PortRange applies only to Protocol tcp or udp/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 0, To: 2 } }])), /From must be a port from 1 to 65535/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 10, To: 70000 } }])), /To must be a port from 1 to 65535/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 20, To: 10 } }])), /From \(20\) must not be greater than To \(10\)/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/24", Protocol: "sctp" }])), /Protocol must be one of tcp, udp, icmp or all/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/24", HostName: "db.example", Protocol: "tcp" }])), /exactly one of Cidr .* or HostName/);
    await invalid(await create("bad", host([{ HostName: "bad_name..example", Protocol: "tcp" }])), /is not a host name/);
    await invalid(await create("bad", host([{ HostName: "10.77.0.5", Protocol: "tcp" }])), /write an address as Cidr with \/32/);
    await invalid(await create("bad", host([])), /Destinations must list 1 to 100/);
    await invalid(await create("bad", { HostEgressConfiguration: { Destinations: [{ Cidr: "10.77.0.0/24", Protocol: "tcp" }], NetworkProtocol: "DualStack" } }), /NetworkProtocol must be IPv4/);
    await invalid(await create("bad", { ...PG, VpcEgressConfiguration: { SubnetIds: ["subnet-1"] } }), /exactly one member/);
    await invalid(await create("bad", { Other: {} }), /exactly one member|unknown member/);
    await invalid(await create("bad", host([{ Cidr: "10.77.0.0/24", Protocol: "tcp", Port: 1 }])), /unknown member 'Port'/);
    await invalid(await create("bad name!"), /Name must be 1 to 64 letters/);
    await invalid(await call("POST", PATH, { Configuration: PG }), /Name must be/);
    await invalid(await call("POST", PATH, { Name: "x" }), /Configuration is required/);
    await invalid(await create("bad", PG, { OperatorRole: "not-a-role" }), /OperatorRole must be an IAM role ARN/);
    await invalid(await create("bad", PG, { Tags: { "aws:x": "y" } }), /must not start with 'aws:'/);
    await invalid(await call("POST", PATH, { Name: "x", Configuration: PG, Extra: 1 }), /takes no member 'Extra'/);
    await invalid(await call("POST", PATH, "{not json"), /not valid JSON/);
    assert.equal((await get("bad")).status, 404, "nothing invalid was created");
  });

  test("an unsigned request is refused", async () => {
    const res = await fetch(`${t.platform.url}${PATH}`);
    assert.equal(res.status, 403);
  });

  test("a VpcEgressConfiguration is accepted, then FAILED with InvalidSubnet: lmvm has no VPCs", async () => {
    const vpc = { VpcEgressConfiguration: { SubnetIds: ["subnet-0abc"], SecurityGroupIds: ["sg-1"], NetworkProtocol: "IPv4", AssociatedComputeResourceTypes: ["MicroVm"] } };
    const r = await create("vpc", vpc);
    assert.equal(r.status, 202);
    assert.deepEqual(r.body.Configuration, vpc);
    const failed = await settled("vpc", (b) => b.State === "FAILED", "vpc FAILED");
    assert.equal(failed.StateReasonCode, "InvalidSubnet");
    assert.match(String(failed.StateReason), /no VPCs, so subnet subnet-0abc cannot be used\. Describe the network with HostEgressConfiguration/);
  });

  test("host names are resolved while PENDING: to /32 CIDRs, or FAILED naming the name", async () => {
    const expected = (await lookup("deb.debian.org", { family: 4, all: true })).map((a) => `${a.address}/32`).sort();
    await create("mirror", host([{ HostName: "deb.debian.org", Protocol: "tcp", PortRange: { From: 80, To: 80 } }]));
    const ok = await active("mirror");
    const dest = (ok.Configuration as { HostEgressConfiguration: { Destinations: { ResolvedCidrs?: string[] }[] } }).HostEgressConfiguration.Destinations[0]!;
    assert.deepEqual(dest.ResolvedCidrs, expected);
    assert.match(String(ok.StateReason), /deb\.debian\.org resolved to/);

    await create("nxdomain", host([{ HostName: "no-such-host.invalid", Protocol: "tcp" }]));
    const nx = await settled("nxdomain", (b) => b.State === "FAILED", "nxdomain FAILED");
    assert.match(String(nx.StateReason), /Host name no-such-host\.invalid/);
    assert.ok(["InvalidSubnet", "InternalError"].includes(String(nx.StateReasonCode)));

    await create("loop", host([{ HostName: "localhost", Protocol: "tcp" }]));
    const loop = await settled("loop", (b) => b.State === "FAILED", "loop FAILED");
    assert.equal(loop.StateReasonCode, "InvalidSubnet");
    assert.match(String(loop.StateReason), /localhost resolves to 127\.0\.0\.1, in loopback/);
  });

  test("a name is unique; ClientToken makes Create idempotent and refuses a different request", async () => {
    const dup = await create("pg", PG);
    assert.equal(dup.status, 409);
    assert.equal(dup.errorType, "ResourceConflictException");
    assert.match(String(dup.body.message), /named 'pg' already exists/);

    const a = await create("idem", PG, { ClientToken: "tok-1" });
    const b = await create("idem", PG, { ClientToken: "tok-1" });
    assert.equal(a.status, 202);
    assert.equal(b.status, 202);
    assert.equal(a.body.Id, b.body.Id);
    const c = await create("idem-2", PG, { ClientToken: "tok-1" });
    assert.equal(c.status, 409);
    assert.equal(c.errorType, "ResourceConflictException");
    assert.match(String(c.body.message), /already used for a different CreateNetworkConnector request/);
  });

  test("ListNetworkConnectors pages with MaxItems and Marker, and filters by State", async () => {
    for (let i = 0; i < 5; i++) await create(`page-${i}`, PG);
    for (let i = 0; i < 5; i++) await active(`page-${i}`);
    const names: string[] = [];
    let marker: string | undefined;
    let pages = 0;
    do {
      const r = await call("GET", `${PATH}?MaxItems=2${marker ? `&Marker=${encodeURIComponent(marker)}` : ""}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const items = r.body.NetworkConnectors as Record<string, unknown>[];
      assert.ok(items.length <= 2);
      names.push(...items.map((i) => String(i.Name)));
      marker = r.body.NextMarker as string | undefined;
      pages++;
    } while (marker);
    assert.ok(pages >= 3);
    for (let i = 0; i < 5; i++) assert.ok(names.includes(`page-${i}`));
    assert.equal(new Set(names).size, names.length, "no connector twice");
    const one = (await call("GET", `${PATH}?MaxItems=100`)).body.NetworkConnectors as Record<string, unknown>[];
    const pg = one.find((i) => i.Name === "pg")!;
    assert.deepEqual(Object.keys(pg).sort(), ["Arn", "Id", "LastModified", "LatestVersion", "Name", "State", "Type"]);
    assert.equal(pg.Type, "HOST_EGRESS");
    assert.equal(one.find((i) => i.Name === "vpc")!.Type, "VPC_EGRESS");
    const failed = (await call("GET", `${PATH}?State=FAILED`)).body.NetworkConnectors as Record<string, unknown>[];
    assert.ok(failed.length >= 1 && failed.every((i) => i.State === "FAILED"));
    await invalid(await call("GET", `${PATH}?MaxItems=0`), /MaxItems must be a whole number from 1 to 100/);
    await invalid(await call("GET", `${PATH}?Marker=garbage`), /Marker is invalid/);
    await invalid(await call("GET", `${PATH}?State=BROKEN`), /State must be one of PENDING, ACTIVE/);
  });

  test("UpdateNetworkConnector makes a new immutable version; the connector stays ACTIVE while LastUpdateStatus goes InProgress to Successful or Failed", async () => {
    await create("upd", PG);
    await active("upd");
    const wider = host([{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 5432, To: 5433 } }]);
    const u = await call("PUT", `${PATH}/upd`, { Configuration: wider });
    assert.equal(u.status, 202, JSON.stringify(u.body));
    assert.equal(u.body.State, "ACTIVE");
    assert.ok(["InProgress", "Successful"].includes(String(u.body.LastUpdateStatus)));
    const v2 = await settled("upd", (b) => b.LastUpdateStatus === "Successful", "update Successful");
    assert.equal(v2.Version, 2);
    assert.equal(v2.LatestVersion, 2);
    assert.deepEqual(v2.Configuration, wider);
    const old = await get(`${ARN_PREFIX}upd:1`);
    assert.equal(old.status, 200);
    assert.equal(old.body.Arn, `${ARN_PREFIX}upd:1`);
    assert.equal(old.body.Version, 1);
    assert.deepEqual(old.body.Configuration, PG);
    assert.equal((await get(`${ARN_PREFIX}upd:9`)).status, 404);

    const broken = await call("PUT", `${PATH}/upd`, { Configuration: host([{ HostName: "localhost", Protocol: "tcp" }]) });
    assert.equal(broken.status, 202);
    const failed = await settled("upd", (b) => b.LastUpdateStatus === "Failed", "update Failed");
    assert.equal(failed.State, "ACTIVE");
    assert.equal(failed.Version, 2, "the version in force stays");
    assert.equal(failed.LastUpdateStatusReasonCode, "InvalidSubnet");
    assert.match(String(failed.LastUpdateStatusReason), /Version 3 failed, so version 2 stays in force: Host name localhost resolves to 127\.0\.0\.1/);

    const versions = await call("GET", `${PATH}/upd/versions`);
    assert.equal(versions.status, 200);
    const list = versions.body.NetworkConnectorVersions as Record<string, unknown>[];
    assert.deepEqual(list.map((v) => [v.Version, v.State, v.VersionArn, v.Arn]), [
      [1, "ACTIVE", `${ARN_PREFIX}upd:1`, `${ARN_PREFIX}upd`],
      [2, "ACTIVE", `${ARN_PREFIX}upd:2`, `${ARN_PREFIX}upd`],
      [3, "FAILED", `${ARN_PREFIX}upd:3`, `${ARN_PREFIX}upd`],
    ]);
    const paged = await call("GET", `${PATH}/upd/versions?MaxItems=1`);
    assert.equal((paged.body.NetworkConnectorVersions as unknown[]).length, 1);
    assert.ok(paged.body.NextMarker);
    const onlyFailed = (await call("GET", `${PATH}/upd/versions?State=FAILED`)).body.NetworkConnectorVersions as Record<string, unknown>[];
    assert.deepEqual(onlyFailed.map((v) => v.Version), [3]);
    await invalid(await call("GET", `${PATH}/${encodeURIComponent(`${ARN_PREFIX}upd:1`)}/versions`), /unqualified identifier/);

    await invalid(await call("PUT", `${PATH}/upd`, {}), /Give Configuration, OperatorRole or both/);
    await invalid(await call("PUT", `${PATH}/${encodeURIComponent(`${ARN_PREFIX}upd:2`)}`, { Configuration: PG }), /unqualified identifier.*versions are immutable/);
    const onFailed = await call("PUT", `${PATH}/vpc`, { Configuration: PG });
    assert.equal(onFailed.status, 409);
    assert.equal(onFailed.errorType, "ResourceConflictException");
    assert.match(String(onFailed.body.message), /is FAILED; only an ACTIVE connector can be updated/);
    const missing = await call("PUT", `${PATH}/nothing-here`, { Configuration: PG });
    assert.equal(missing.status, 404);
  });

  test("RunMicrovm binds connectors into the recorded egress policy, pinned to a version; the default is INTERNET_EGRESS", async () => {
    const run = async (egress?: string[]) => {
      const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, ...(egress ? { egressNetworkConnectors: egress } : {}) }));
      const vm = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }));
      const recorded = t.platform.controlPlane.microvms.peek(microvmId!)!.config.egress;
      return { id: microvmId!, listed: vm.egressNetworkConnectors, policy: recorded };
    };
    const pinned = await run([`${ARN_PREFIX}pg`, INTERNET]);
    assert.deepEqual(pinned.listed, [`${ARN_PREFIX}pg:1`, INTERNET]);
    assert.deepEqual(pinned.policy, { internet: true, rules: [{ cidrs: ["10.77.0.0/24"], protocol: "tcp", ports: { from: 5432, to: 5432 } }], connectors: [`${ARN_PREFIX}pg:1`, INTERNET] });

    const old = await run([`${ARN_PREFIX}upd:1`]);
    assert.deepEqual(old.listed, [`${ARN_PREFIX}upd:1`]);
    assert.deepEqual(old.policy, { internet: false, rules: [{ cidrs: ["10.77.0.0/24"], protocol: "tcp", ports: { from: 5432, to: 5432 } }], connectors: [`${ARN_PREFIX}upd:1`] });
    const latest = await run([`${ARN_PREFIX}upd`]);
    assert.deepEqual(latest.listed, [`${ARN_PREFIX}upd:2`]);
    assert.deepEqual(latest.policy?.rules[0]?.ports, { from: 5432, to: 5433 });

    const byName = await run([`${ARN_PREFIX}mirror`]);
    assert.equal(byName.policy?.rules[0]?.hostName, "deb.debian.org");
    assert.ok(byName.policy?.rules[0]?.cidrs.every((c) => c.endsWith("/32")));

    const dflt = await run();
    assert.deepEqual(dflt.listed, [INTERNET]);
    assert.deepEqual(dflt.policy, { internet: true, rules: [], connectors: [INTERNET] });
    const none = await run([]);
    assert.deepEqual(none.listed, []);
    assert.deepEqual(none.policy, { internet: false, rules: [], connectors: [] });

    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: [`${ARN_PREFIX}vpc`] })), "ConflictException", /network connector .*:vpc is FAILED .*only an ACTIVE connector can be used/);
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: [`${ARN_PREFIX}ghost`] })), "ValidationException", /network connector .*:ghost does not exist/);
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: ["pg"] })), "ValidationException", /Malformed network connector ARN: 'pg'/);
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: [`${ARN_PREFIX}upd:3`] })), "ConflictException", /version 3 of network connector .* is FAILED/);
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: ["arn:aws:lambda:us-east-1:111111111111:network-connector:pg"] })), "ValidationException", /belongs to another account/);

    for (const vm of [pinned, old, latest, byName, dflt, none]) await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.id }));
  });

  test("a connector in use by a MicroVM cannot be deleted; once it is terminated, it is DELETING, then gone", async () => {
    await create("busy", PG);
    await active("busy");
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: [`${ARN_PREFIX}busy`] }));
    const refused = await call("DELETE", `${PATH}/busy`);
    assert.equal(refused.status, 409);
    assert.equal(refused.errorType, "ResourceConflictException");
    assert.match(String(refused.body.message), new RegExp(`busy is in use by MicroVM ${microvmId}`));
    assert.equal((await get("busy")).body.State, "ACTIVE");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: microvmId! }));
    await eventually(async () => ((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }))).state === "TERMINATED" ? true : undefined), "terminated");
    const deleted = await call("DELETE", `${PATH}/busy`);
    assert.equal(deleted.status, 202, JSON.stringify(deleted.body));
    assert.equal(deleted.body.State, "DELETING");
    assert.equal(deleted.body.Arn, `${ARN_PREFIX}busy`);
    await eventually(async () => ((await get("busy")).status === 404 ? true : undefined), "busy gone");
    assert.equal((await call("DELETE", `${PATH}/busy`)).status, 404);
  });

  test("a single old version can be deleted unless in use; the version in force only with the connector", async () => {
    const inForce = await call("DELETE", `${PATH}/${encodeURIComponent(`${ARN_PREFIX}upd:2`)}`);
    assert.equal(inForce.status, 409);
    assert.match(String(inForce.body.message), /in force; it cannot be deleted on its own/);
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: [`${ARN_PREFIX}upd:1`] }));
    const busy = await call("DELETE", `${PATH}/${encodeURIComponent(`${ARN_PREFIX}upd:1`)}`);
    assert.equal(busy.status, 409);
    assert.match(String(busy.body.message), new RegExp(`Version 1 of network connector .*upd is in use by MicroVM ${microvmId}`));
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: microvmId! }));
    await eventually(async () => ((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }))).state === "TERMINATED" ? true : undefined), "terminated");
    const ok = await call("DELETE", `${PATH}/${encodeURIComponent(`${ARN_PREFIX}upd:1`)}`);
    assert.equal(ok.status, 202);
    assert.equal((await get(`${ARN_PREFIX}upd:1`)).status, 404);
    assert.equal((await get("upd")).body.State, "ACTIVE");
  });

  test("images may name account connectors; a build binds them when it starts, a build in progress holds them, and one gone or not ACTIVE fails the build", async () => {
    await rejects(t.client.send(new CreateMicrovmImageCommand(imageRequest("ghost-img", { egressNetworkConnectors: [`${ARN_PREFIX}ghost`] }))), "ValidationException", /network connector .*:ghost does not exist/);

    await t.client.send(new CreateMicrovmImageCommand(imageRequest("with-pg", { egressNetworkConnectors: [`${ARN_PREFIX}pg`, INTERNET] })));
    const job = await eventually(async () => builder.jobs.find((j) => j.image.name === "with-pg"), "build started");
    assert.deepEqual(job.egress, { internet: true, rules: [{ cidrs: ["10.77.0.0/24"], protocol: "tcp", ports: { from: 5432, to: 5432 } }], connectors: [`${ARN_PREFIX}pg:1`, INTERNET] });
    const refused = await call("DELETE", `${PATH}/pg`);
    assert.equal(refused.status, 409);
    assert.match(String(refused.body.message), /pg is in use by build .* of .*microvm-image:with-pg version 1\.0 \(IN_PROGRESS\)/);
    await builder.succeed();
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "with-pg" }))).state === "CREATED" ? true : undefined), "with-pg built");

    const plain = builder.jobs.find((j) => j.image.name === "app")!;
    assert.deepEqual(plain.egress, { internet: false, rules: [], connectors: [] }, "a build without connectors has no egress");

    await t.client.send(new CreateMicrovmImageCommand(imageRequest("with-vpc", { egressNetworkConnectors: [`${ARN_PREFIX}vpc`] })));
    const failed = await eventually(async () => {
      const builds = await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: "with-vpc", imageVersion: "1.0" }));
      const b = builds.items?.[0];
      if (!b?.buildId) return undefined;
      const full = await t.client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: "with-vpc", imageVersion: "1.0", buildId: b.buildId }));
      return full.buildState === "FAILED" ? full : undefined;
    }, "with-vpc build FAILED");
    assert.match(failed.stateReason ?? "", /network connectors cannot be used: .*network connector .*:vpc is FAILED/);
    assert.ok(!builder.jobs.some((j) => j.image.name === "with-vpc"), "the builder never ran it");
  });
});

describe("lmvm server --default-egress none", () => {
  let t: TestPlatform;
  const builder = new ScriptedBuilder();
  builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });
  before(async () => {
    t = await startTestPlatform({ builder, runtime: new ScriptedRuntime(), defaultEgress: "none" });
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("app")));
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "app" }))).state === "CREATED" ? true : undefined), "image built");
  });
  after(() => t.stop());

  test("a MicroVM that names no egress connector gets none; one that names INTERNET_EGRESS gets the internet", async () => {
    const a = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
    assert.deepEqual((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: a.microvmId! }))).egressNetworkConnectors, []);
    assert.deepEqual(t.platform.controlPlane.microvms.peek(a.microvmId!)!.config.egress, { internet: false, rules: [], connectors: [] });
    const b = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: [INTERNET] }));
    assert.deepEqual((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: b.microvmId! }))).egressNetworkConnectors, [INTERNET]);
    assert.equal(t.platform.controlPlane.microvms.peek(b.microvmId!)!.config.egress?.internet, true);
  });
});

describe("network-connector request rates", () => {
  let t: TestPlatform;
  before(async () => {
    t = await startTestPlatform({ rateLimits: { "*": 10_000, GetNetworkConnector: 1 / 60 } });
  });
  after(() => t.stop());

  test("past its rate, an operation is a TooManyRequestsException with Retry-After", async () => {
    const first = await signedFetch(t.platform.url, t.credentials, "GET", `${PATH}/nothing`);
    assert.equal(first.status, 404);
    const second = await signedFetch(t.platform.url, t.credentials, "GET", `${PATH}/nothing`);
    assert.equal(second.status, 429);
    assert.equal(second.errorType, "TooManyRequestsException");
    assert.match(String(second.body.message), /Rate exceeded: GetNetworkConnector is limited to one request every 60\.0 s/);
    assert.equal((await signedFetch(t.platform.url, t.credentials, "GET", PATH)).status, 200, "other operations have their own rate");
  });
});
