// The web console on the control API's port: its static files under
// /console/ (built by `npm run build` into dist/console, nothing fetched from
// elsewhere), and the one route the SDK lacks that it needs: a code upload.
//
// PUT /lmvm/2025-09-09/uploads?imageName=<name> with a zip body, SigV4-signed
// for `lambda` like every other call, stores the zip under the data directory
// as <sha256>.zip and answers {"codeArtifactUri":"file://…"}, which the
// console then passes to CreateMicrovmImage or UpdateMicrovmImage. The upload
// asks the caller's policies what creating (or, for an image that exists,
// updating) that image asks, so a caller who may not build it may not upload
// for it either. Uploads are content-addressed: the same zip is stored once.
// Each upload also removes uploads older than UPLOAD_GRACE_MS that no image
// version names any more (their images were deleted or their versions pruned),
// so uploads do not pile up in the data directory.

import { createHash, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { extname, join } from "node:path";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { authorizeAll, microvmsApiAuthorization, resourcesOf, type Identities, type Scope, type TagLookup } from "../core/index.js";
import { authenticateRequest } from "../api/authenticate.js";
import { AwsError, sendError, toAwsError } from "../api/errors.js";
import { recordOf } from "../api/request-record.js";
import type { SigV4Verifier } from "../api/sigv4.js";
import { LMVM_PREFIX } from "../api/wire.js";
import { CONSOLE_PATH, UPLOADS_PATH } from "./wire.js";

export interface ConsoleOptions {
  /** The built console (dist/console). */
  assetsDir: string;
  /** Where uploaded zips are kept (paths(dataDir).uploads). */
  uploadsDir: string;
  /** The `lambda` verifier the API's routes use. */
  verifier: SigV4Verifier;
  identities: Identities;
  scope: Scope;
  /** Tags of a resource, for aws:ResourceTag conditions. */
  tagsOf: TagLookup;
  /** Whether an image of this name exists (the upload is then for an update). */
  imageExists: (name: string) => Promise<boolean>;
  /** The largest zip accepted: the builder's limit for a compressed artifact. */
  maxUploadBytes: number;
  /** The code artifact URIs that image versions name now: their uploads are kept. */
  artifactsInUse: () => Promise<Set<string>>;
}

/** An upload no version names is kept this long, for the CreateMicrovmImage or UpdateMicrovmImage that follows it. */
export const UPLOAD_GRACE_MS = 24 * 3600_000;

/** Removes uploads older than UPLOAD_GRACE_MS that no image version names; best effort. */
export async function sweepUploads(dir: string, inUse: Set<string>, now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    if (inUse.has(`file://${path}`)) continue;
    const info = await stat(path).catch(() => undefined);
    if (!info || now - info.mtimeMs < UPLOAD_GRACE_MS) continue;
    await rm(path, { force: true }).catch(() => undefined);
    removed.push(name);
  }
  return removed;
}

/** The console's build output, next to the compiled server (dist/console). */
export const DEFAULT_ASSETS_DIR = join(import.meta.dirname, "..", "..", "console");

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".txt": "text/plain; charset=utf-8",
};

const IMAGE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$/;

export function registerConsole(app: FastifyInstance, opts: ConsoleOptions): void {
  const headers = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    // Same origin only: the API (fetch, the SDK), and the MicroVMs' shells (wss, any port of the endpoint domain).
    // Inline styles: xterm.js sizes and colours the terminal through a <style> element it makes.
    "content-security-policy": "default-src 'self'; connect-src 'self' wss: ws:; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'",
  };
  const serve = async (file: string, reply: import("fastify").FastifyReply) => {
    const type = CONTENT_TYPES[extname(file)];
    const path = join(opts.assetsDir, file);
    if (!type || !existsSync(path)) {
      if (file === "index.html") return reply.code(503).type("text/plain; charset=utf-8").send("The console is not built: run `npm run build` (it bundles src/console into dist/console).\n");
      return reply.code(404).type("text/plain; charset=utf-8").send(`No console file ${file}.\n`);
    }
    return reply.headers(headers).type(type).send(await readFile(path));
  };
  app.get(CONSOLE_PATH, async (_req, reply) => reply.redirect(`${CONSOLE_PATH}/`));
  app.get(`${CONSOLE_PATH}/`, async (_req, reply) => serve("index.html", reply));
  app.get(`${CONSOLE_PATH}/:file`, async (req, reply) => {
    const file = (req.params as { file: string }).file;
    if (!/^[a-zA-Z0-9_-][a-zA-Z0-9_.-]*$/.test(file)) return reply.code(404).type("text/plain; charset=utf-8").send("No such console file.\n");
    return serve(file, reply);
  });

  // The signature is checked before the body is read, against the SHA-256 the client declares in
  // x-amz-content-sha256 (the signer signs that hash): nobody without a valid signature makes the
  // server take in a body of up to maxUploadBytes. The handler checks it again with the body.
  const beforeBody = async (req: FastifyRequest, reply: import("fastify").FastifyReply) => {
    const declared = req.headers["x-amz-content-sha256"];
    try {
      if (req.headers.authorization !== undefined && (typeof declared !== "string" || !/^[0-9a-f]{64}$/.test(declared))) {
        throw new AwsError("ValidationException", 400, "An upload must carry its SHA-256 (hex) in the x-amz-content-sha256 header, signed with the request (the SDK's SignatureV4 sends it unless its applyChecksum option is off).");
      }
      await authenticateRequest(opts.verifier, req, { declaredSha256: typeof declared === "string" ? declared : "" });
    } catch (err) {
      const record = recordOf(req);
      Object.assign(record, { eventSource: "lambda.amazonaws.com", eventName: "UploadCodeArtifact", readOnly: false });
      return sendError(reply, randomUUID(), toAwsError(err));
    }
  };
  app.put(`${LMVM_PREFIX}${UPLOADS_PATH}`, { bodyLimit: opts.maxUploadBytes, onRequest: beforeBody }, async (req: FastifyRequest, reply) => {
    const requestId = randomUUID();
    const record = recordOf(req);
    Object.assign(record, { eventSource: "lambda.amazonaws.com", eventName: "UploadCodeArtifact", requestId, readOnly: false });
    try {
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const { caller, rawQuery } = await authenticateRequest(opts.verifier, req, body);
      const name = new URLSearchParams(rawQuery).get("imageName") ?? "";
      record.requestParameters = { imageName: name, bytes: body.length };
      if (!IMAGE_NAME.test(name)) throw new AwsError("ValidationException", 400, `'imageName' must name the image the code is for (1-64 letters, digits, '-' or '_', starting with a letter or digit); got '${name}'.`);
      const requests = (await opts.imageExists(name))
        ? await microvmsApiAuthorization(opts.scope, "UpdateMicrovmImage", { imageIdentifier: name }, opts.tagsOf)
        : await microvmsApiAuthorization(opts.scope, "CreateMicrovmImage", { name }, opts.tagsOf);
      record.resources = resourcesOf(requests);
      await authorizeAll(opts.identities, caller, requests);
      const magic = body.subarray(0, 4).toString("latin1");
      if (magic !== "PK\x03\x04" && magic !== "PK\x05\x06") {
        throw new AwsError("ValidationException", 400, "The upload is not a zip archive. Zip the app with its Dockerfile at the root (for example: cd app && zip -r ../app.zip .).");
      }
      const digest = createHash("sha256").update(body).digest("hex");
      await mkdir(opts.uploadsDir, { recursive: true, mode: 0o700 });
      const path = join(opts.uploadsDir, `${digest}.zip`);
      // Written afresh even when the same zip is there: a new file, new for the grace period, that a
      // sweep running beside this upload (another upload's) cannot have removed in between.
      const partial = `${path}.${requestId}.partial`;
      await writeFile(partial, body, { mode: 0o600 });
      await rename(partial, path);
      void opts.artifactsInUse().then((inUse) => sweepUploads(opts.uploadsDir, inUse)).catch(() => undefined);
      const output = { codeArtifactUri: `file://${path}`, sha256: digest, size: body.length };
      record.responseElements = output;
      return reply.code(201).header("x-amzn-requestid", requestId).type("application/json").send(JSON.stringify(output));
    } catch (err) {
      return sendError(reply, requestId, toAwsError(err));
    }
  });
}
