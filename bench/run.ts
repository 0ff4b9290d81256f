// `npm run bench [-- --json] [--quick] [--filter SUBSTR]`
//
// Discovers every `*.bench.js` next to this file (`*.bench.ts` when run from
// source under tsx), runs them one after another in this process and prints
// one table, or one JSON object per result line with --json. Each result
// carries its own baseline measured in the same run; `ratio` is
// value / baselineValue (read it with the unit's direction: for ns/packet
// below 1 is better, for Gbit/s above 1 is).
import { readdirSync } from 'node:fs'
import { cpus, release, totalmem } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { BenchFunction, BenchResult } from './types.js'

export interface RunnerOptions {
  json: boolean
  quick: boolean
  filter: string | undefined
  /** Directory to discover benchmarks in; defaults to this file's. */
  dir: string
}

export interface RunnerReport {
  name: string
  value: number
  unit: string
  baseline: string
  baselineValue: number
  ratio: number
  higherIsBetter: boolean
}

export function parseRunnerArgs(argv: readonly string[], defaultDir: string): RunnerOptions {
  const options: RunnerOptions = { json: false, quick: false, filter: undefined, dir: defaultDir }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--json') options.json = true
    else if (arg === '--quick') options.quick = true
    else if (arg === '--filter') {
      const value = argv[++i]
      if (value === undefined) throw new Error('--filter needs a substring')
      options.filter = value
    } else if (arg.startsWith('--filter=')) options.filter = arg.slice('--filter='.length)
    else if (arg === '--dir') {
      const value = argv[++i]
      if (value === undefined) throw new Error('--dir needs a directory')
      options.dir = value
    } else throw new Error(`unknown argument ${arg} (expected --json, --quick, --filter SUBSTR)`)
  }
  return options
}

/** Benchmark files in `dir`: `*.bench.js`, or `*.bench.ts` when this runner itself runs from source. */
export function discoverBenchmarks(dir: string, extension: '.js' | '.ts', filter: string | undefined): string[] {
  const suffix = `.bench${extension}`
  return readdirSync(dir)
    .filter((file) => file.endsWith(suffix) && !file.endsWith('.d.ts'))
    .filter((file) => filter === undefined || basename(file, suffix).includes(filter))
    .sort()
    .map((file) => join(dir, file))
}

export function machineDescription(): string {
  const cpuList = cpus()
  const model = cpuList[0]?.model.trim() ?? 'unknown CPU'
  const memoryGiB = (totalmem() / 2 ** 30).toFixed(1)
  return `machine: ${model}, ${cpuList.length} cores, ${memoryGiB} GiB, Node ${process.version}, Linux ${release()}`
}

export function toReport(result: BenchResult): RunnerReport {
  return {
    name: result.name,
    value: result.value,
    unit: result.unit,
    baseline: result.baseline,
    baselineValue: result.baselineValue,
    ratio: result.baselineValue === 0 ? Number.NaN : result.value / result.baselineValue,
    higherIsBetter: result.higherIsBetter,
  }
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  const abs = Math.abs(n)
  if (abs >= 1e6) return n.toExponential(3)
  if (abs >= 100) return n.toFixed(0)
  if (abs >= 10) return n.toFixed(1)
  return n.toFixed(2)
}

export function formatTable(reports: readonly RunnerReport[]): string {
  const header = ['benchmark', 'value', 'baseline', 'baseline value', 'ratio']
  const rows = reports.map((r) => [
    r.name,
    `${formatNumber(r.value)} ${r.unit}`,
    r.baseline,
    `${formatNumber(r.baselineValue)} ${r.unit}`,
    `${formatNumber(r.ratio)}x (${r.higherIsBetter ? 'higher' : 'lower'} is better)`,
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join(' | ').trimEnd()
  return [line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n')
}

function isBenchResult(x: unknown): x is BenchResult {
  if (typeof x !== 'object' || x === null) return false
  const r = x as Record<string, unknown>
  return (
    typeof r.name === 'string' &&
    typeof r.value === 'number' &&
    typeof r.unit === 'string' &&
    typeof r.baseline === 'string' &&
    typeof r.baselineValue === 'number' &&
    typeof r.higherIsBetter === 'boolean'
  )
}

/** Runs the benchmarks; returns the process exit code (1 when any benchmark failed). */
export async function runBenchmarks(options: RunnerOptions, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const extension = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
  const files = discoverBenchmarks(options.dir, extension, options.filter)
  if (!options.json) out.write(`${machineDescription()}\n${options.quick ? 'quick mode\n' : ''}\n`)
  if (files.length === 0) {
    process.stderr.write(`no benchmarks${options.filter === undefined ? '' : ` matching "${options.filter}"`} in ${options.dir}\n`)
    return 1
  }
  const gc = (globalThis as { gc?: () => void }).gc
  const reports: RunnerReport[] = []
  let failed = 0
  for (const file of files) {
    try {
      const mod = (await import(pathToFileURL(file).href)) as { default?: unknown }
      if (typeof mod.default !== 'function') throw new Error('no default-exported benchmark function')
      gc?.()
      const results = await (mod.default as BenchFunction)({ quick: options.quick })
      if (!Array.isArray(results) || !results.every(isBenchResult)) throw new Error('did not return BenchResult[]')
      for (const result of results) {
        const report = toReport(result)
        reports.push(report)
        if (options.json) out.write(`${JSON.stringify(report)}\n`)
      }
    } catch (err) {
      failed++
      process.stderr.write(`benchmark ${basename(file)} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    }
  }
  if (!options.json) out.write(`${formatTable(reports)}\n`)
  return failed === 0 ? 0 : 1
}

const invokedDirectly = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]
if (invokedDirectly) {
  let options: RunnerOptions
  try {
    options = parseRunnerArgs(process.argv.slice(2), dirname(fileURLToPath(import.meta.url)))
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`)
    process.exit(2)
  }
  process.exitCode = await runBenchmarks(options)
}
