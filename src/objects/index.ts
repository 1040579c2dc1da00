// Public face of the object store: its adapters (S3, a shared directory), its
// keys, and the builder and runtime that keep images and checkpoints in it.
export { openObjectStore, type ObjectStoreConfig } from "./open.js";
export { S3ObjectStore, type S3ObjectStoreOptions } from "./s3.js";
export { FileObjectStore } from "./file.js";
export { checkpointKey, checkpointPrefix, imageKey, imagePrefix } from "./keys.js";
export { pack, unpack } from "./archive.js";
export { Replicas, ReplicatedBuilder, ReplicatedRuntime, TRANSFER_SECONDS, type CheckpointImport, type ReplicasOptions } from "./replicas.js";
