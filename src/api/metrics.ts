// Prometheus metrics, served unsigned at GET /metrics on the control API
// (scrapers do not sign requests; the figures hold no secrets):
// MicroVMs and builds by state (counted in the store at scrape time), run,
// suspend, resume and terminate latency, and what the endpoint proxy served.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { RuntimeTimings, Store } from "../core/index.js";
import type { ProxyMetrics } from "../proxy/index.js";

const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];

export class Metrics implements RuntimeTimings, ProxyMetrics {
  readonly registry = new Registry();
  private readonly runtime: Histogram<"operation" | "outcome">;
  private readonly requests: Counter<"status">;
  private readonly bytes: Counter<"status" | "direction">;

  constructor(store: Store) {
    collectDefaultMetrics({ register: this.registry, prefix: "lmvm_" });
    this.runtime = new Histogram({
      name: "lmvm_microvm_operation_seconds",
      help: "Time the sandbox runtime took: run (snapshot restore and /run), suspend, resume, terminate.",
      labelNames: ["operation", "outcome"],
      buckets: LATENCY_BUCKETS,
      registers: [this.registry],
    });
    this.requests = new Counter({ name: "lmvm_proxy_requests_total", help: "Requests and WebSocket upgrades the endpoint proxy answered, by HTTP status.", labelNames: ["status"], registers: [this.registry] });
    this.bytes = new Counter({ name: "lmvm_proxy_bytes_total", help: "Body bytes through the endpoint proxy, by status and direction (in: to the app, out: to the client).", labelNames: ["status", "direction"], registers: [this.registry] });
    // Both gauges come from one store query per scrape (prom-client collects metrics concurrently).
    let scrape: Promise<Awaited<ReturnType<Store["countByState"]>>> | undefined;
    const counts = () => (scrape ??= store.countByState().finally(() => setImmediate(() => (scrape = undefined))));
    for (const [name, help, key] of [["lmvm_microvms", "MicroVMs by state.", "microvms"], ["lmvm_builds", "Image builds by state.", "builds"]] as const) {
      new Gauge({
        name,
        help,
        labelNames: ["state"],
        registers: [this.registry],
        async collect() {
          const byState = (await counts())[key];
          this.reset();
          for (const [state, n] of Object.entries(byState)) this.set({ state }, n ?? 0);
        },
      });
    }
  }

  observe(operation: "run" | "suspend" | "resume" | "terminate", seconds: number, outcome: "ok" | "error"): void {
    this.runtime.observe({ operation, outcome }, seconds);
  }

  request(status: number, bytesIn: number, bytesOut: number): void {
    const s = String(status);
    this.requests.inc({ status: s });
    if (bytesIn) this.bytes.inc({ status: s, direction: "in" }, bytesIn);
    if (bytesOut) this.bytes.inc({ status: s, direction: "out" }, bytesOut);
  }
}
