// Every network-connector operation through the real CLI (bin/lmvm) against
// a real `lmvm server` that builds the busybox example once and runs real
// MicroVMs: a connector granting 10.77.0.0/24 port 5432 over tcp is created
// and ACTIVE, updated into a second version, listed, got by version; a
// MicroVM run with it records the version-qualified ARN and the policy, and
// the connector cannot be deleted until the MicroVM is terminated; a MicroVM
// that names no egress connector gets INTERNET_EGRESS, or nothing once the
// server runs with --default-egress none. Whether traffic flows is
// test/e2e's egress tests' concern; this checks the API and what is recorded.

import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import type { EgressPolicy } from "../../src/core/index.js";
import { paths } from "../../src/server/data-paths.js";
import { SqliteStore } from "../../src/store/index.js";
import { makeZip } from "../support/artifacts.js";
import { eventually, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";

const EXAMPLE = join(import.meta.dirname, "..", "..", "..", "examples", "busybox");
const IMAGE = "arn:aws:lambda:us-east-1:000000000000:microvm-image:nc-app";
const ARN = "arn:aws:lambda:us-east-1:000000000000:network-connector:corp-db";
const INTERNET = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS";
const CONFIG = { HostEgressConfiguration: { Destinations: [{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 5432, To: 5432 } }], NetworkProtocol: "IPv4", AssociatedComputeResourceTypes: ["MicroVm"] } };
const RULE = { cidrs: ["10.77.0.0/24"], protocol: "tcp", ports: { from: 5432, to: 5432 } };

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
}

describe("network connectors through the lmvm CLI", { timeout: 900_000 }, () => {
  let dataDir: string;
  let server: ServerProcess;
  let env: Record<string, string>;
  const run = async (args: string[]) => {
    const r = await lmvm(args, env);
    assert.equal(r.code, 0, `lmvm ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const json = async (args: string[]) => JSON.parse(await run(args)) as Record<string, unknown>;
  const fails = async (args: string[], type: string, message: RegExp) => {
    const r = await lmvm(args, env);
    assert.equal(r.code, 254, `lmvm ${args.join(" ")} should fail: ${r.stdout}`);
    assert.match(r.stderr, new RegExp(`An error occurred \\(${type}\\) when calling the \\w+ operation: `));
    assert.match(r.stderr, message);
  };
  /** The egress policy the server recorded for a MicroVM, read from its database. */
  const recorded = async (id: string): Promise<EgressPolicy | undefined> => {
    const store = await SqliteStore.open(paths(dataDir).database);
    try {
      return (await store.getMicrovm(id))?.config.egress;
    } finally {
      await store.close();
    }
  };
  const runMicrovm = async (extra: string[]) => {
    const id = await run(["run-microvm", "--image-identifier", IMAGE, ...extra, "--query", "microvmId", "--output", "text"]);
    await run(["wait", "microvm-running", "--microvm-identifier", id, "--delay", "0.5"]);
    return id;
  };
  const terminate = async (id: string) => {
    await run(["terminate-microvm", "--microvm-identifier", id]);
    await run(["wait", "microvm-terminated", "--microvm-identifier", id, "--delay", "0.5"]);
  };

  before(async () => {
    dataDir = tempDir();
    env = { LMVM_DATA_DIR: dataDir };
    server = await spawnServer(dataDir, { builds: true });
    const zip = join(dataDir, "busybox.zip");
    writeFileSync(zip, makeZip(files(EXAMPLE).map((f) => ({ name: relative(EXAMPLE, f), content: readFileSync(f, "utf8") }))));
    await run(["create-microvm-image", "--name", "nc-app", "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:busybox",
      "--build-role-arn", "arn:aws:iam::000000000000:role/MicroVMBuildRole", "--code-artifact", JSON.stringify({ uri: `file://${zip}` })]);
    const state = await eventually(async () => {
      const s = await run(["get-microvm-image", "--image-identifier", "nc-app", "--query", "state", "--output", "text"]);
      return ["CREATED", "CREATE_FAILED"].includes(s) ? s : undefined;
    }, "nc-app built", 600_000);
    assert.equal(state, "CREATED", await run(["get-microvm-image-version", "--image-identifier", "nc-app", "--image-version", "1.0", "--query", "stateReason", "--output", "text"]));
  });
  after(async () => {
    await server?.kill();
  });

  test("create, get, list, update, list versions and delete a version, all through the CLI", async () => {
    const created = await json(["create-network-connector", "--name", "corp-db", "--configuration", JSON.stringify(CONFIG), "--tags", "team=data,env=test", "--client-token", "corp-db-1",
      "--operator-role", "arn:aws:iam::000000000000:role/NetworkConnectorOperator"]);
    assert.equal(created.Arn, ARN);
    assert.equal(created.State, "PENDING");
    assert.deepEqual(created.Configuration, CONFIG);
    const again = await json(["create-network-connector", "--name", "corp-db", "--configuration", JSON.stringify(CONFIG), "--tags", "team=data,env=test", "--client-token", "corp-db-1",
      "--operator-role", "arn:aws:iam::000000000000:role/NetworkConnectorOperator"]);
    assert.equal(again.Id, created.Id, "the same ClientToken and request is the same connector");
    await fails(["create-network-connector", "--name", "corp-db", "--configuration", JSON.stringify(CONFIG)], "ResourceConflictException", /named 'corp-db' already exists/);
    await fails(["create-network-connector", "--name", "bad", "--configuration", JSON.stringify({ HostEgressConfiguration: { Destinations: [{ Cidr: "10.77.0.9/24", Protocol: "tcp" }] } })],
      "InvalidParameterValueException", /'10\.77\.0\.9\/24' has host bits set; the network is 10\.77\.0\.0\/24/);

    await eventually(async () => ((await run(["get-network-connector", "--identifier", "corp-db", "--query", "State", "--output", "text"])) === "ACTIVE" ? true : undefined), "corp-db ACTIVE", 30_000);
    const got = await json(["get-network-connector", "--identifier", String(created.Id)]);
    assert.equal(got.State, "ACTIVE");
    assert.equal(got.Version, 1);
    assert.deepEqual(got.Tags, { team: "data", env: "test" });
    assert.equal(await run(["list-network-connectors", "--query", "NetworkConnectors[?Name=='corp-db'].State | [0]", "--output", "text"]), "ACTIVE");
    assert.equal(await run(["list-network-connectors", "--state", "FAILED", "--query", "length(NetworkConnectors)"]), "0");

    const wider = { HostEgressConfiguration: { ...CONFIG.HostEgressConfiguration, Destinations: [{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 5432, To: 5433 } }] } };
    const updated = await json(["update-network-connector", "--identifier", ARN, "--configuration", JSON.stringify(wider)]);
    assert.equal(updated.State, "ACTIVE");
    await eventually(async () => ((await run(["get-network-connector", "--identifier", "corp-db", "--query", "LastUpdateStatus", "--output", "text"])) === "Successful" ? true : undefined), "update Successful", 30_000);
    // Back to the first configuration: version 3, the one MicroVMs below bind.
    await run(["update-network-connector", "--identifier", "corp-db", "--configuration", JSON.stringify(CONFIG)]);
    await eventually(async () => ((await run(["get-network-connector", "--identifier", "corp-db", "--query", "[LastUpdateStatus,Version]", "--output", "text"])) === "Successful\t3" ? true : undefined), "version 3", 30_000);
    const versions = await json(["list-network-connector-versions", "--identifier", "corp-db", "--page-size", "1"]);
    assert.deepEqual((versions.NetworkConnectorVersions as Record<string, unknown>[]).map((v) => [v.Version, v.State, v.VersionArn]), [[1, "ACTIVE", `${ARN}:1`], [2, "ACTIVE", `${ARN}:2`], [3, "ACTIVE", `${ARN}:3`]]);
    const v2 = await json(["get-network-connector", "--identifier", `${ARN}:2`]);
    assert.equal(v2.Arn, `${ARN}:2`);
    assert.deepEqual(v2.Configuration, wider);
    const gone = await json(["delete-network-connector", "--identifier", `${ARN}:2`]);
    assert.equal(gone.State, "DELETING");
    await fails(["get-network-connector", "--identifier", `${ARN}:2`], "ResourceNotFoundException", /has no version 2/);
    await fails(["delete-network-connector", "--identifier", `${ARN}:3`], "ResourceConflictException", /in force; it cannot be deleted on its own/);
  });

  test("a MicroVM run with the connector records its version-qualified ARN and policy; the connector cannot be deleted until the MicroVM is terminated", async () => {
    const id = await runMicrovm(["--egress-network-connectors", ARN]);
    assert.deepEqual(JSON.parse(await run(["get-microvm", "--microvm-identifier", id, "--query", "egressNetworkConnectors"])), [`${ARN}:3`]);
    assert.deepEqual(await recorded(id), { internet: false, rules: [RULE], connectors: [`${ARN}:3`] });

    await fails(["delete-network-connector", "--identifier", "corp-db"], "ResourceConflictException", new RegExp(`corp-db is in use by MicroVM ${id} \\(RUNNING\\)`));
    await run(["suspend-microvm", "--microvm-identifier", id]);
    await run(["wait", "microvm-suspended", "--microvm-identifier", id, "--delay", "0.5"]);
    await fails(["delete-network-connector", "--identifier", "corp-db"], "ResourceConflictException", new RegExp(`in use by MicroVM ${id} \\(SUSPENDED\\)`));
    await run(["resume-microvm", "--microvm-identifier", id]);
    await run(["wait", "microvm-running", "--microvm-identifier", id, "--delay", "0.5"]);
    assert.deepEqual(await recorded(id), { internet: false, rules: [RULE], connectors: [`${ARN}:3`] }, "suspend and resume keep the policy");

    await terminate(id);
    const deleted = await json(["delete-network-connector", "--identifier", "corp-db"]);
    assert.equal(deleted.State, "DELETING");
    assert.equal(deleted.Arn, ARN);
    await eventually(async () => ((await lmvm(["get-network-connector", "--identifier", "corp-db"], env)).code === 254 ? true : undefined), "corp-db gone", 30_000);
    await fails(["get-network-connector", "--identifier", "corp-db"], "ResourceNotFoundException", /'corp-db' does not exist/);
    await fails(["run-microvm", "--image-identifier", IMAGE, "--egress-network-connectors", ARN], "ValidationException", /network connector .*corp-db does not exist/);
  });

  test("a MicroVM that names no egress connector gets INTERNET_EGRESS; under --default-egress none it gets none", async () => {
    const dflt = await runMicrovm([]);
    assert.deepEqual(JSON.parse(await run(["get-microvm", "--microvm-identifier", dflt, "--query", "egressNetworkConnectors"])), [INTERNET]);
    assert.deepEqual(await recorded(dflt), { internet: true, rules: [], connectors: [INTERNET] });
    await terminate(dflt);

    await server.kill();
    server = await spawnServer(dataDir, { builds: true, args: ["--default-egress", "none"] });
    const none = await runMicrovm([]);
    assert.deepEqual(JSON.parse(await run(["get-microvm", "--microvm-identifier", none, "--query", "egressNetworkConnectors"])), []);
    assert.deepEqual(await recorded(none), { internet: false, rules: [], connectors: [] });
    const explicit = await runMicrovm(["--egress-network-connectors", INTERNET]);
    assert.deepEqual(JSON.parse(await run(["get-microvm", "--microvm-identifier", explicit, "--query", "egressNetworkConnectors"])), [INTERNET]);
    assert.deepEqual(await recorded(explicit), { internet: true, rules: [], connectors: [INTERNET] });
    assert.deepEqual(await recorded(dflt), { internet: true, rules: [], connectors: [INTERNET] }, "what was recorded before the restart stays");
    await terminate(none);
    await terminate(explicit);
  });
});
