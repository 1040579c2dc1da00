// The endpoint's per-MicroVM limits, from the service's quota table
// (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html#microvms-quotas):
// connections per MicroVM 8/16/32/64/128 for 1/2/4/8/16 vCPU, and 40 requests
// per second at 4 vCPU, 160 at 16 vCPU: 8 connections and 10 requests per
// second per vCPU of the MicroVM's size.
// - Requests per second: a token bucket per MicroVM, refilled at the rate and
//   holding one second's worth; a request or WebSocket upgrade past it gets a
//   429 with Retry-After, at once.
// - Connections: the requests, streams and WebSockets a MicroVM has open at
//   once. One past the limit waits in line (first come, first served) for a
//   slot, up to `queueMs`, then gets a 429: a page that opens a few more
//   streams than the limit loads a little later rather than breaking, and
//   nothing waits unbounded.

import { Refusal } from "./admission.js";

/** What an operator sets; the defaults are the service's table. 0 turns a limit off. */
export interface EndpointLimitsConfig {
  connectionsPerVcpu: number;
  requestsPerSecondPerVcpu: number;
  /** How long a request past the connection limit may wait for a slot (ms). */
  queueMs: number;
}

export const AWS_ENDPOINT_LIMITS: EndpointLimitsConfig = { connectionsPerVcpu: 8, requestsPerSecondPerVcpu: 10, queueMs: 5000 };
export const NO_ENDPOINT_LIMITS: EndpointLimitsConfig = { connectionsPerVcpu: 0, requestsPerSecondPerVcpu: 0, queueMs: 0 };

export interface MicrovmLimits {
  /** Open requests, streams and WebSockets at once; 0 for none. */
  connections: number;
  /** Requests (and WebSocket upgrades) per second; 0 for none. */
  requestsPerSecond: number;
}

/**
 * The limits of a MicroVM whose size peaks at `vcpus` vCPUs. The one place
 * that maps size to limits: re-point it here if sizes change.
 */
export function microvmLimits(vcpus: number, config: EndpointLimitsConfig = AWS_ENDPOINT_LIMITS): MicrovmLimits {
  const v = Math.max(1, vcpus);
  return { connections: Math.round(config.connectionsPerVcpu * v), requestsPerSecond: config.requestsPerSecondPerVcpu * v };
}

/** Parses `--endpoint-limits`: "aws", "off", or comma-separated connections-per-vcpu=N, requests-per-second-per-vcpu=N, queue-ms=N. */
export function parseEndpointLimits(spec: string): EndpointLimitsConfig {
  const s = spec.trim().toLowerCase();
  if (s === "aws") return { ...AWS_ENDPOINT_LIMITS };
  if (s === "off") return { ...NO_ENDPOINT_LIMITS };
  const out = { ...AWS_ENDPOINT_LIMITS };
  const keys: Record<string, keyof EndpointLimitsConfig> = { "connections-per-vcpu": "connectionsPerVcpu", "requests-per-second-per-vcpu": "requestsPerSecondPerVcpu", "queue-ms": "queueMs" };
  for (const part of s.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [name, value] = part.split("=", 2) as [string, string | undefined];
    const key = keys[name];
    if (!key) throw new Error(`unknown limit '${name}'; use aws, off, or ${Object.keys(keys).map((k) => `${k}=N`).join(", ")}`);
    const n = Number(value);
    if (value === undefined || !Number.isFinite(n) || n < 0 || !/^\d+(\.\d+)?$/.test(value)) throw new Error(`${name} must be a number of at least 0 (0 turns it off); got '${value ?? ""}'`);
    out[key] = n;
  }
  return out;
}

interface Waiter {
  grant: () => void;
  timer: NodeJS.Timeout;
}

class MicrovmGate {
  tokens: number;
  refilledAt = Date.now();
  open = 0;
  readonly waiting: Waiter[] = [];

  constructor(readonly limits: MicrovmLimits) {
    this.tokens = limits.requestsPerSecond;
  }
}

/** A slot held by an admitted request: release it once, when the request, stream or WebSocket ends. */
export type Release = () => void;

export class EndpointLimiter {
  private readonly gates = new Map<string, MicrovmGate>();

  constructor(private readonly config: EndpointLimitsConfig) {}

  /** Takes a request-per-second token and a connection slot for MicroVM `id` of `vcpus`, or throws a 429 Refusal. */
  async acquire(id: string, vcpus: number): Promise<Release> {
    const limits = microvmLimits(vcpus, this.config);
    if (!limits.connections && !limits.requestsPerSecond) return () => undefined;
    // A MicroVM's size is fixed for its life: its gate is made once.
    let gate = this.gates.get(id);
    if (!gate) this.gates.set(id, (gate = new MicrovmGate(limits)));
    if (limits.requestsPerSecond > 0) {
      const now = Date.now();
      gate.tokens = Math.min(limits.requestsPerSecond, gate.tokens + ((now - gate.refilledAt) / 1000) * limits.requestsPerSecond);
      gate.refilledAt = now;
      if (gate.tokens < 1) {
        const retryAfter = Math.max(1, Math.ceil((1 - gate.tokens) / limits.requestsPerSecond));
        throw new Refusal(429, `Too many requests: MicroVM ${id} takes at most ${limits.requestsPerSecond} requests per second (${vcpus} vCPU). Retry after ${retryAfter} s.`, { "retry-after": String(retryAfter) });
      }
      gate.tokens -= 1;
    }
    if (limits.connections > 0 && gate.open >= limits.connections) {
      const g = gate;
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          grant: () => {
            clearTimeout(waiter.timer);
            resolve();
          },
          timer: setTimeout(() => {
            g.waiting.splice(g.waiting.indexOf(waiter), 1);
            reject(new Refusal(429, `Too many connections: MicroVM ${id} takes at most ${limits.connections} open requests, streams and WebSockets at once (${vcpus} vCPU); this one waited ${this.config.queueMs} ms for one to end. Retry later.`, { "retry-after": "1" }));
          }, this.config.queueMs),
        };
        g.waiting.push(waiter);
      });
      // The slot was handed over by release(): `open` already counts it.
    } else {
      gate.open++;
    }
    const g = gate;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = g.waiting.shift();
      if (next) return next.grant(); // the slot passes on: `open` stays
      g.open--;
    };
  }

  /** Drops the gates of MicroVMs with nothing open, nothing waiting and a bucket full again (called every second). */
  sweep(now = Date.now()): void {
    for (const [id, g] of this.gates) if (g.open === 0 && !g.waiting.length && now - g.refilledAt > 1000) this.gates.delete(id);
  }
}
