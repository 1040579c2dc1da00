// Statistics shared by the benchmarks: each configuration runs several
// rounds, and a bench prints the median and the spread (min–max) of them.

export function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function fmt(x: number): string {
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** "min–max" of the rounds. */
export function spread(xs: readonly number[]): string {
  return `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`;
}

/** "median unit (min–max)". */
export function summary(xs: readonly number[], unit: string): string {
  return `${fmt(median(xs))}${unit ? ` ${unit}` : ""} (${spread(xs)})`;
}
