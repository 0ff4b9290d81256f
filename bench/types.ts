// The benchmark contract: every `bench/<name>.bench.ts` default-exports a
// function returning results, each measured next to a baseline in the same run
// (runs on these machines vary by 20-30%, so only same-run ratios mean much).

export interface BenchResult {
  /** What was measured, e.g. `checksum 1500 B (wire)`. */
  name: string
  value: number
  /** e.g. `Gbit/s`, `ns/packet`, `packets/s`. */
  unit: string
  /** What the value is compared with, e.g. `DataView.getUint16 loop`. */
  baseline: string
  /** The baseline's figure in the same unit, measured in the same run. */
  baselineValue: number
  higherIsBetter: boolean
}

export interface BenchOptions {
  /** Smoke mode: each benchmark finishes in well under 3 s. */
  quick: boolean
}

export type BenchFunction = (opts: BenchOptions) => Promise<BenchResult[]>
