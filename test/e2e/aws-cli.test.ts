// The README's workflow through the real AWS CLI and boto3, with only
// --endpoint-url (endpoint_url=) added: `lmvm aws-models install` puts the
// generated lambda-microvms model into a fresh HOME's ~/.aws/models, and then
// awscli 1.x (the `aws` first on PATH), Debian's awscli 2.9 (/usr/bin/aws)
// and Debian's python3-boto3 (/usr/bin/python3) drive a real `lmvm server`:
// create an image, wait for its build, run a MicroVM, mint a token, call the
// endpoint with curl, suspend, resume, terminate. A Python app and a Node app
// (examples/python, examples/hello) build at once, one server for the file.
// The SDK has no waiters for lambda-microvms, so the model has none and the
// test polls get-… with a deadline, as a script would.

import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { zipExample } from "../support/artifacts.js";
import { eventually, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";

const EXAMPLES = join(import.meta.dirname, "..", "..", "..", "examples");
const ROLE = "arn:aws:iam::000000000000:role/MicroVMBuildRole";
const DOMAIN = "microvm.localhost";
/**
 * awscli 1.x, when the `aws` first on PATH is one (these machines have one from pyenv; no Debian
 * package gives 1.x, and nothing but PyPI does, which the machines cannot reach), and Debian's
 * awscli 2.9, which scripts/install.sh installs. Without a 1.x, its parts are skipped, saying why.
 */
const AWS_V2 = "/usr/bin/aws";
const AWS_V1: string | undefined = (() => {
  try {
    const v = execFileSync("aws", ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
    return /^aws-cli\/1\./.test(v) ? "aws" : undefined;
  } catch (err) {
    return /^aws-cli\/1\./.test(String((err as { stdout?: string }).stdout ?? "")) ? "aws" : undefined;
  }
})();
const NO_V1 = "the `aws` on PATH is not awscli 1.x (no Debian package has 1.x; these machines have one from pyenv)";
const PYTHON = "/usr/bin/python3";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end; one still running after `timeoutMs` is killed and fails the test. */
function run(file: string, args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: timeoutMs, killSignal: "SIGKILL", cwd: env.HOME }, (err, stdout, stderr) => {
      if (err?.killed) return reject(new Error(`${file} ${args.join(" ")}: not done after ${timeoutMs / 1000} s, so it was killed:\n${stdout}${stderr}`));
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** A boto3 script: runs a MicroVM, mints a token, calls the endpoint, pages ListMicrovms, catches a modelled error, terminates. */
const BOTO3_SCRIPT = `
import json, socket, ssl, sys, time
import boto3, botocore

endpoint, image, ca, proxy_port, domain = sys.argv[1:6]
client = boto3.client("lambda-microvms", endpoint_url=endpoint)
out = {"botocore": botocore.__version__}

def wait_for(vm, state, deadline_s=120):
    end = time.time() + deadline_s
    while True:
        got = client.get_microvm(microvmIdentifier=vm)
        if got["state"] == state:
            return got
        if got["state"] in ("FAILED", "TERMINATED") or time.time() > end:
            raise SystemExit("MicroVM %s is %s (%s), not %s" % (vm, got["state"], got.get("stateReason"), state))
        time.sleep(0.5)

vm = client.run_microvm(imageIdentifier=image)["microvmId"]
out["microvmId"] = vm
running = wait_for(vm, "RUNNING")
out["startedAtType"] = type(running["startedAt"]).__name__
token = client.create_microvm_auth_token(microvmIdentifier=vm, expirationInMinutes=10, allowedPorts=[{"port": 8080}])["authToken"]["X-aws-proxy-auth"]

# The endpoint, connected to 127.0.0.1 with the MicroVM's name for SNI and Host (as curl --connect-to).
host = "%s.%s" % (vm, domain)
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", int(proxy_port)), timeout=60) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(("GET / HTTP/1.1\\r\\nHost: %s:%s\\r\\nX-aws-proxy-auth: %s\\r\\nConnection: close\\r\\n\\r\\n" % (host, proxy_port, token)).encode())
        answer = b""
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            answer += chunk
head, _, body = answer.partition(b"\\r\\n\\r\\n")
out["status"] = int(head.split(b" ")[1])
out["body"] = json.loads(body)

pages = client.get_paginator("list_microvms").paginate(PaginationConfig={"PageSize": 1})
out["listed"] = [vm_["microvmId"] for page in pages for vm_ in page["items"]]

try:
    client.get_microvm(microvmIdentifier="microvm-0123456789abcdef0")
    out["error"] = None
except client.exceptions.ResourceNotFoundException as e:
    out["error"] = [e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]]

client.terminate_microvm(microvmIdentifier=vm)
out["final"] = wait_for(vm, "TERMINATED")["state"]
print(json.dumps(out))
`;

describe("the AWS CLI (1.x and 2.x) and boto3 with the lambda-microvms model lmvm installs", { timeout: 1_500_000 }, () => {
  let dataDir: string;
  let home: string;
  let server: ServerProcess;
  let env: Record<string, string>;
  let caFile: string;
  const images = new Map<string, Promise<string>>();

  const aws = async (cli: string, args: string[]): Promise<string> => {
    const r = await run(cli, ["lambda-microvms", ...args, "--endpoint-url", server.url], env);
    assert.equal(r.code, 0, `${cli} lambda-microvms ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
    return r.stdout.trim();
  };
  const untilState = (cli: string, id: string, want: string) =>
    eventually(async () => {
      const s = await aws(cli, ["get-microvm", "--microvm-identifier", id, "--query", "state", "--output", "text"]);
      assert.ok(!["TERMINATED", "FAILED"].includes(s) || s === want, `${id} went ${s} while waiting for ${want}`);
      return s === want ? s : undefined;
    }, `${id} to be ${want}`, 120_000);
  const curl = async (id: string, token: string): Promise<{ requests: number }> => {
    const r = await run("curl", ["-sS", "--fail-with-body", "--max-time", "60", "--cacert", caFile, "--connect-to", `::127.0.0.1:${server.endpointPort}`,
      "-H", `X-aws-proxy-auth: ${token}`, `https://${id}.${DOMAIN}:${server.endpointPort}/`], env);
    assert.equal(r.code, 0, `curl: exit ${r.code}\n${r.stdout}${r.stderr}`);
    return JSON.parse(r.stdout) as { requests: number };
  };

  /** The README's CLI workflow: create the image, wait for its build; then run, token, curl, suspend, resume, terminate. */
  const workflow = async (cli: string, example: string) => {
    const image = await images.get(example)!;
    const id = await aws(cli, ["run-microvm", "--image-identifier", image, "--query", "microvmId", "--output", "text"]);
    assert.match(id, /^microvm-[0-9a-f]{17}$/);
    await untilState(cli, id, "RUNNING");
    const token = await aws(cli, ["create-microvm-auth-token", "--microvm-identifier", id, "--expiration-in-minutes", "30",
      "--allowed-ports", "port=8080", "--query", 'authToken."X-aws-proxy-auth"', "--output", "text"]);
    const first = await curl(id, token);
    await aws(cli, ["suspend-microvm", "--microvm-identifier", id]);
    await untilState(cli, id, "SUSPENDED");
    await aws(cli, ["resume-microvm", "--microvm-identifier", id]);
    await untilState(cli, id, "RUNNING");
    const second = await curl(id, token);
    assert.equal(second.requests, first.requests + 1, `the app's counter goes on across suspend and resume: ${JSON.stringify(first)} then ${JSON.stringify(second)}`);
    const listed = JSON.parse(await aws(cli, ["list-microvms", "--image-identifier", image, "--query", "items[].[microvmId,state]"])) as string[][];
    assert.deepEqual(listed.find(([m]) => m === id), [id, "RUNNING"]);
    await aws(cli, ["terminate-microvm", "--microvm-identifier", id]);
    await untilState(cli, id, "TERMINATED");
  };

  before(async () => {
    dataDir = tempDir("lmvm-aws-cli-");
    home = join(dataDir, "home");
    mkdirSync(home);
    // Only what a user's shell would give the CLI: no AWS_* from the test run's environment.
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => !k.startsWith("AWS_") && v !== undefined)) as Record<string, string>;
    env = {
      ...clean,
      HOME: home,
      AWS_SHARED_CREDENTIALS_FILE: join(dataDir, "credentials"),
      AWS_CONFIG_FILE: join(home, ".aws", "config"),
      AWS_DEFAULT_REGION: "us-east-1",
      AWS_PAGER: "",
    };
    const installed = await lmvm(["aws-models", "install"], { HOME: home });
    assert.equal(installed.code, 0, installed.stderr);
    const modelDir = join(home, ".aws", "models", "lambda-microvms", "2025-09-09");
    assert.match(installed.stdout, new RegExp(`lambda-microvms 2025-09-09: endpoint-rule-set-1.json, paginators-1.json, service-2.json → ${modelDir}`));
    assert.deepEqual(readdirSync(modelDir).sort(), ["endpoint-rule-set-1.json", "paginators-1.json", "service-2.json"]);

    server = await spawnServer(dataDir, { builds: true });
    caFile = join(dataDir, "tls", "ca.pem");
    // Both builds start now and run at once: the Python app with awscli 1.x, the Node app with Debian's awscli 2.
    for (const [example, cli] of [["python", AWS_V1 ?? AWS_V2], ["hello", AWS_V2]] as const) {
      const zip = join(dataDir, `${example}.zip`);
      writeFileSync(zip, zipExample(example));
      const name = `cli-${example}`;
      const built = (async () => {
        const arn = await aws(cli, ["create-microvm-image", "--name", name, "--cli-input-json", `file://${join(EXAMPLES, example, "microvm-image.json")}`,
          "--build-role-arn", ROLE, "--code-artifact", `uri=file://${zip}`, "--query", "imageArn", "--output", "text"]);
        const state = await eventually(async () => {
          const s = await aws(cli, ["get-microvm-image", "--image-identifier", name, "--query", "state", "--output", "text"]);
          return s === "CREATED" || s === "CREATE_FAILED" ? s : undefined;
        }, `examples/${example} to build`, 420_000);
        if (state !== "CREATED") {
          const log = await lmvm(["logs", "build", name, "1.0"], { LMVM_DATA_DIR: dataDir });
          assert.fail(`examples/${example} did not build (${state}):\n${log.stdout}${log.stderr}`);
        }
        return arn;
      })();
      built.catch(() => undefined); // reported by the tests that use it
      images.set(example, built);
    }
  });
  after(async () => {
    await server?.kill();
    if (dataDir) {
      await freeSandboxes(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("an lmvm error is the AWS error code in both CLIs, and the generated help documents the commands", async () => {
    for (const [cli, exit] of [...(AWS_V1 ? [[AWS_V1, 255] as const] : []), [AWS_V2, 254] as const]) {
      const r = await run(cli, ["lambda-microvms", "get-microvm", "--microvm-identifier", "microvm-0123456789abcdef0", "--endpoint-url", server.url], env);
      assert.equal(r.code, exit, `${cli}: ${r.stderr}`);
      assert.match(r.stderr, /An error occurred \(ResourceNotFoundException\) when calling the GetMicrovm operation: MicroVM 'microvm-0123456789abcdef0' does not exist/);
      const bad = await run(cli, ["lambda-microvms", "create-microvm-auth-token", "--microvm-identifier", "microvm-0123456789abcdef0", "--expiration-in-minutes", "61",
        "--allowed-ports", "port=8080", "--endpoint-url", server.url], env);
      assert.match(bad.stderr, /An error occurred \(ValidationException\) when calling the CreateMicrovmAuthToken operation: .*expirationInMinutes/);
    }
    // The CLI's parameter validation comes from the model's shapes (required members, enums).
    const missing = await run(AWS_V1 ?? AWS_V2, ["lambda-microvms", "run-microvm", "--endpoint-url", server.url], env);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /--image-identifier/);
    if (AWS_V1) { // awscli 2's help needs groff and a pager, which install.sh does not add
      const help = await run(AWS_V1, ["lambda-microvms", "run-microvm", "help"], { ...env, PAGER: "cat", MANPAGER: "cat" });
      assert.match(help.stdout.replace(/\s+/g, " "), /Runs a new MicroVM from the specified image/);
    }
  });

  test("IAM, STS, CloudWatch Logs and CloudTrail need no model from lmvm: both CLIs' own ones call lmvm", async () => {
    for (const cli of [...(AWS_V1 ? [AWS_V1] : []), AWS_V2]) {
      const call = async (args: string[]) => {
        const r = await run(cli, [...args, "--endpoint-url", server.url], env);
        assert.equal(r.code, 0, `${cli} ${args.join(" ")}: ${r.stderr}`);
        return r.stdout.trim();
      };
      assert.equal(await call(["sts", "get-caller-identity", "--query", "Account", "--output", "text"]), "000000000000");
      assert.ok(Array.isArray(JSON.parse(await call(["iam", "list-users", "--output", "json"])).Users));
      assert.ok(Array.isArray(JSON.parse(await call(["logs", "describe-log-groups", "--output", "json"])).logGroups));
      assert.match(await call(["cloudtrail", "lookup-events", "--max-results", "1", "--query", "Events[0].EventName", "--output", "text"]), /^[A-Z]\w+$/);
    }
  });

  test("awscli 1.x runs the README's workflow on a Python app", async (t) => {
    if (!AWS_V1) return t.skip(NO_V1);
    const version = await run(AWS_V1, ["--version"], env);
    assert.match(version.stdout + version.stderr, /^aws-cli\/1\./);
    await workflow(AWS_V1, "python");
  });

  test("Debian's awscli 2 runs the README's workflow on a Node app", async () => {
    assert.ok(existsSync(AWS_V2), `${AWS_V2} is not installed (Debian's awscli package; scripts/install.sh installs it)`);
    const version = await run(AWS_V2, ["--version"], env);
    assert.match(version.stdout + version.stderr, /^aws-cli\/2\./);
    await workflow(AWS_V2, "hello");
  });

  test("boto3 (Debian's python3-boto3) runs a MicroVM, mints a token, calls the endpoint and terminates it", async () => {
    const image = await images.get("python")!;
    const script = join(dataDir, "boto3-workflow.py");
    writeFileSync(script, BOTO3_SCRIPT);
    const r = await run(PYTHON, [script, server.url, image, caFile, String(server.endpointPort), DOMAIN], env, 300_000);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { botocore: string; microvmId: string; startedAtType: string; status: number; body: { requests: number }; listed: string[]; error: [string, number]; final: string };
    assert.match(out.botocore, /^1\.29\./, "Debian's python3-boto3 (botocore 1.29)");
    assert.equal(out.startedAtType, "datetime", "timestamps are parsed as timestamps");
    assert.equal(out.status, 200);
    assert.equal(typeof out.body.requests, "number");
    assert.ok(out.listed.includes(out.microvmId), `the paginator lists ${out.microvmId}: ${out.listed.join(", ")}`);
    assert.deepEqual(out.error, ["ResourceNotFoundException", 404], "client.exceptions.ResourceNotFoundException catches lmvm's 404");
    assert.equal(out.final, "TERMINATED");
  });
});
