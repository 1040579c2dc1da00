// The audit trail's writer, on a thread of its own: it appends each batch of
// events in one transaction on its own connection to the database and answers
// once the batch is in the write-ahead log. The connection runs WAL with
// synchronous=NORMAL: a committed batch is in the operating system's hands, so
// it survives the server's crash or `kill -9`, and reaches the disk with the
// next checkpoint or the next control-plane commit (synchronous=FULL), whichever
// comes first. Only a power loss can take the last events. The main thread only
// waits for the answer (src/store/sqlite.ts, AuditWriter).
//
// A checkpoint syncs the log and the database file (two fsyncs, tens of ms on
// a busy disk). SQLite runs one automatically inside the commit that grows the
// log past 1000 pages, and a read-only API call waiting for its event would
// wait for those fsyncs too (under load, every hundred calls or so). So this
// writer's connection checkpoints only as a safety net (wal_autocheckpoint=10000, should the checkpointer stop): every
// CHECKPOINT_EVENTS events it asks (AuditBatchResult.checkpoint) the
// checkpointer, this same file run with workerData.checkpointEveryMs, a thread
// and connection of its own, which checkpoints PASSIVE-ly (blocking neither the
// writer nor readers) then, and every checkpointEveryMs in any case. Not more
// often: the first commit after a whole log was checkpointed starts the log
// again and syncs its header (one fsync, on the writer), so each checkpoint
// costs the writer's commit one fsync; about 1000 pages of events go between
// two, as with SQLite's own automatic checkpoint.

import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** One event as the writer stores it: its lookup columns, its record, and its resources' [type, name] rows. */
export type AuditRow = [eventId: string, time: number, source: string, name: string, readOnly: 0 | 1, username: string | null, accessKeyId: string | null, errorCode: string | null, record: string, resources: [string, string][]];

export type AuditBatch = { id: number; rows: AuditRow[] } | { id: number; expireBefore: number };

export interface AuditBatchResult {
  id: number;
  /** The log has grown by about CHECKPOINT_EVENTS events since the last request: time for a checkpoint. */
  checkpoint?: boolean;
  /** How many events an expiry removed. */
  removed?: number;
  error?: { message: string; code?: string };
}

const data = workerData as { file: string; checkpointEveryMs?: number } | null;

/** Events appended between two checkpoint requests: about 1000 pages of log. */
const CHECKPOINT_EVENTS = 2000;

if (parentPort && data?.checkpointEveryMs) {
  const db = new Database(data.file);
  db.pragma("busy_timeout = 10000");
  const checkpoint = () => {
    try {
      db.pragma("wal_checkpoint(PASSIVE)");
    } catch {
      // Busy or failing now: the next request or tick tries again, and the control plane's own commits checkpoint too.
    }
  };
  setInterval(checkpoint, data.checkpointEveryMs);
  parentPort.on("message", checkpoint);
} else if (parentPort) {
  const port = parentPort;
  const db = new Database(data!.file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("busy_timeout = 10000");
  // The checkpointer thread keeps the log short; should it ever stop, the writer checkpoints once the log reaches 10,000 pages (about 40 MB).
  db.pragma("wal_autocheckpoint = 10000");
  const event = db.prepare(
    "insert into audit_events (event_id, event_time, event_source, event_name, read_only, username, access_key_id, error_code, record) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const resource = db.prepare("insert into audit_resources (event_seq, resource_type, resource_name) values (?, ?, ?)");
  const append = db.transaction((rows: AuditRow[]) => {
    for (const [eventId, time, source, name, readOnly, username, key, error, record, resources] of rows) {
      const { lastInsertRowid } = event.run(eventId, time, source, name, readOnly, username, key, error, record);
      for (const [type, resourceName] of resources) resource.run(lastInsertRowid, type, resourceName);
    }
  });
  // Expiry goes oldest first, a few thousand events per transaction, so appends are never held up long.
  const oldest = db.prepare("select seq from audit_events where event_time < ? order by seq limit 2000");
  const dropResources = db.prepare("delete from audit_resources where event_seq between ? and ?");
  const dropEvents = db.prepare("delete from audit_events where seq between ? and ? and event_time < ?");
  const expireSome = db.transaction((before: number): number => {
    const seqs = oldest.all(before) as { seq: number }[];
    if (!seqs.length) return 0;
    const first = seqs[0]!.seq;
    const last = seqs.at(-1)!.seq;
    dropResources.run(first, last);
    return dropEvents.run(first, last, before).changes;
  });
  const expire = (before: number): number => {
    let removed = 0;
    for (let n = expireSome.immediate(before); n > 0; n = expireSome.immediate(before)) removed += n;
    return removed;
  };
  let sinceCheckpoint = 0;
  port.on("message", (batch: AuditBatch) => {
    try {
      if ("expireBefore" in batch) {
        port.postMessage({ id: batch.id, removed: expire(batch.expireBefore) } satisfies AuditBatchResult);
        return;
      }
      append.immediate(batch.rows);
      sinceCheckpoint += batch.rows.length;
      const checkpoint = sinceCheckpoint >= CHECKPOINT_EVENTS;
      if (checkpoint) sinceCheckpoint = 0;
      port.postMessage({ id: batch.id, ...(checkpoint ? { checkpoint } : {}) } satisfies AuditBatchResult);
    } catch (err) {
      const e = err as { message?: string; code?: string };
      port.postMessage({ id: batch.id, error: { message: e.message ?? String(err), ...(e.code ? { code: e.code } : {}) } } satisfies AuditBatchResult);
    }
  });
}
