// The object store's keys (docs/design.md, "Object store"), relative to the
// store's root (the s3:// URL's prefix or the file:// directory):
//   images/<image name>/<version>/<architecture>.tar.zst
//       a built version: rootfs/, config.json, snapshot/ (with lmvm-platform.json), snapshot-boot.log
//   checkpoints/<microvm id>/<incarnation>.tar.zst
//       a suspended MicroVM: checkpoint/ (memory and disk, lmvm-platform.json) and sandbox.json
//   checkpoints/<microvm id>/current.json
//       {"incarnation": n}: the MicroVM's incarnation now live or saved (moved at a resume before the
//       new sandbox starts, and with a suspend's upload); only a checkpoint of that incarnation is used
//   lmvm-store.json
//       {"storeId": ...}: written on first use; a host that has seen it refuses to read "absent" as
//       "gone" until it finds the same marker again (an unmounted path or a mistyped prefix looks empty)
// The server that builds a version puts its image once; the server that
// suspends a MicroVM puts its checkpoint. DeleteMicrovmImageVersion and
// DeleteMicrovmImage remove images/<name>/<version>/, TerminateMicrovm
// removes checkpoints/<id>/.

import { ObjectStoreUnavailable } from "../core/index.js";

const KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Throws unless `key` is a valid relative key (no empty, `.` or `..` parts). */
export function checkKey(key: string): string {
  if (!KEY.test(key) || key.split("/").some((p) => p === "." || p === "..")) throw new ObjectStoreUnavailable(`'${key}' is not a valid object key: it must be a relative path of letters, digits, '.', '_', '-' and '/'.`);
  return key;
}

/** Throws unless `prefix` is empty or a valid key followed by `/`. */
export function checkPrefix(prefix: string): string {
  if (prefix !== "" && (!prefix.endsWith("/") || !checkKey(prefix.slice(0, -1)))) throw new ObjectStoreUnavailable(`'${prefix}' is not a valid key prefix: it must end with '/'.`);
  return prefix;
}

/** Image names, versions and architectures are already restricted to safe characters by the API. */
export const imagePrefix = (imageName: string, version: string) => `images/${imageName}/${version}/`;
export const imageKey = (imageName: string, version: string, architecture: string) => `${imagePrefix(imageName, version)}${architecture}.tar.zst`;
export const checkpointPrefix = (microvmId: string) => `checkpoints/${microvmId}/`;
export const checkpointHeadKey = (microvmId: string) => `${checkpointPrefix(microvmId)}current.json`;
export const MARKER_KEY = "lmvm-store.json";
export const checkpointKey = (microvmId: string, incarnation: number) => `${checkpointPrefix(microvmId)}${incarnation}.tar.zst`;

/** The incarnation a checkpoint key names, or undefined for another key. */
export function incarnationOf(key: string): number | undefined {
  const m = /\/(\d+)\.tar\.zst$/.exec(key);
  return m ? Number(m[1]) : undefined;
}
