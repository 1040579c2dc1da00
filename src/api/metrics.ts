// Prometheus metrics, served unsigned at GET /metrics on the control API
// (scrapers do not sign requests; the figures hold no secrets):
// MicroVMs and builds by state (counted in the store at scrape time), run,
// suspend, resume and terminate latency, what the endpoint proxy served, and
// each MicroVM's network: bytes it sent and received (its host veth's
// counters, so egress, DNS, the endpoint's traffic and hooks alike; summed over
// its sandboxes across suspend and resume), packets the firewall refused,
// and DNS queries it sent to its resolver; warm pools' sizes (target and
// ready) per image version, and the RunMicrovm calls that hit and missed them.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { RuntimeTimings, Store } from "../core/index.js";
import type { ProxyMetrics } from "../proxy/index.js";

/** One MicroVM's network figures, since it was run. */
export interface MicrovmNetworkCounters {
  microvmId: string;
  bytesOut: number;
  bytesIn: number;
  refused: number;
  dnsQueries: number;
}

/** Warm pools (src/runtime/pool.ts): per image version, its size (target, ready) or a count (hits, misses in `ready`). */
export interface PoolFigure {
  imageArn: string;
  version: string;
  target: number;
  ready: number;
  /** Restored and running until quiet, to be paused and ready (pools only). */
  maturing?: number;
}

export interface PoolFigures {
  pools: PoolFigure[];
  hits: PoolFigure[];
  misses: PoolFigure[];
}

const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];

export class Metrics implements RuntimeTimings, ProxyMetrics {
  readonly registry = new Registry();
  private readonly runtime: Histogram<"operation" | "outcome">;
  private readonly requests: Counter<"status">;
  private readonly bytes: Counter<"status" | "direction">;

  constructor(store: Store, network?: () => Promise<MicrovmNetworkCounters[]>, pools?: () => PoolFigures) {
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
    if (network) {
      // The figures of all MicroVMs come from one reading per scrape.
      let reading: Promise<MicrovmNetworkCounters[]> | undefined;
      const read = () => (reading ??= network().finally(() => setImmediate(() => (reading = undefined))));
      const perMicrovm = (name: string, help: string, labels: string[], fill: (c: Counter<string>, m: MicrovmNetworkCounters) => void) =>
        new Counter({
          name,
          help,
          labelNames: labels,
          registers: [this.registry],
          async collect() {
            const all = await read().catch(() => []);
            this.reset();
            for (const m of all) fill(this, m);
          },
        });
      perMicrovm("lmvm_microvm_network_bytes_total", "Bytes each MicroVM sent (direction out) and received (in) on its network interface: egress, DNS, its endpoint's traffic and hooks.", ["microvm", "direction"], (c, m) => {
        c.inc({ microvm: m.microvmId, direction: "out" }, m.bytesOut);
        c.inc({ microvm: m.microvmId, direction: "in" }, m.bytesIn);
      });
      perMicrovm("lmvm_microvm_egress_refused_packets_total", "Packets each MicroVM sent that the host's firewall refused: connection attempts and datagrams to destinations its egress does not grant (each retried SYN counts).", ["microvm"], (c, m) => c.inc({ microvm: m.microvmId }, m.refused));
      perMicrovm("lmvm_microvm_dns_queries_total", "DNS queries each MicroVM sent to its resolver (169.254.169.253).", ["microvm"], (c, m) => c.inc({ microvm: m.microvmId }, m.dnsQueries));
    }
    if (pools) {
      const labels = ["image", "version"];
      const of = (f: PoolFigure) => ({ image: f.imageArn, version: f.version });
      new Gauge({ name: "lmvm_warm_pool_target", help: "Warm clones wanted per image version (its lmvm:warm-pool tag, or lmvm server --warm-pool).", labelNames: labels, registers: [this.registry], collect() {
        this.reset();
        for (const f of pools().pools) this.set(of(f), f.target);
      } });
      new Gauge({ name: "lmvm_warm_pool_ready", help: "Warm clones restored, paused and ready to claim, per image version.", labelNames: labels, registers: [this.registry], collect() {
        this.reset();
        for (const f of pools().pools) this.set(of(f), f.ready);
      } });
      new Gauge({ name: "lmvm_warm_pool_maturing", help: "Warm clones restored and running until they are quiet (at least 10 s), then paused and ready, per image version; a run that finds no ready clone claims one of these.", labelNames: labels, registers: [this.registry], collect() {
        this.reset();
        for (const f of pools().pools) this.set(of(f), f.maturing ?? 0);
      } });
      new Counter({ name: "lmvm_warm_pool_hits_total", help: "RunMicrovm calls that claimed a warm clone, per image version.", labelNames: labels, registers: [this.registry], collect() {
        this.reset();
        for (const f of pools().hits) this.inc(of(f), f.ready);
      } });
      new Counter({ name: "lmvm_warm_pool_misses_total", help: "RunMicrovm calls of a version with a warm pool that found no clone to claim (none ready or maturing, or none with the run's egress routes and logging), per image version.", labelNames: labels, registers: [this.registry], collect() {
        this.reset();
        for (const f of pools().misses) this.inc(of(f), f.ready);
      } });
    }
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
