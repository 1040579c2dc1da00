// The audit trail's writer, on a thread of its own: it appends each batch of
// events in one transaction on its own connection to the database (WAL,
// synchronous=FULL) and answers once the batch is on disk. The fsync that
// makes an event durable then never stalls the API's event loop; the main
// thread only waits for the answer (src/store/sqlite.ts, AuditWriter).

import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** One event as the writer stores it: its lookup columns, its record, and its resources' [type, name] rows. */
export type AuditRow = [eventId: string, time: number, source: string, name: string, readOnly: 0 | 1, username: string | null, accessKeyId: string | null, errorCode: string | null, record: string, resources: [string, string][]];

export interface AuditBatch {
  id: number;
  rows: AuditRow[];
}

export interface AuditBatchResult {
  id: number;
  error?: { message: string; code?: string };
}

if (parentPort) {
  const port = parentPort;
  const db = new Database((workerData as { file: string }).file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma("busy_timeout = 10000");
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
  port.on("message", (batch: AuditBatch) => {
    try {
      append.immediate(batch.rows);
      port.postMessage({ id: batch.id } satisfies AuditBatchResult);
    } catch (err) {
      const e = err as { message?: string; code?: string };
      port.postMessage({ id: batch.id, error: { message: e.message ?? String(err), ...(e.code ? { code: e.code } : {}) } } satisfies AuditBatchResult);
    }
  });
}
