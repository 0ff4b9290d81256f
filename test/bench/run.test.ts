import { execFileSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { formatTable, parseRunnerArgs, toReport } from '../../bench/run.js'

const root = new URL('../../', import.meta.url).pathname

describe('bench runner', () => {
  it('--quick --json runs the checksum benchmark and prints one well-formed JSON object per result', () => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--expose-gc', 'bench/run.ts', '--quick', '--json', '--filter', 'checksum'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 60_000,
    })
    const lines = out.split('\n').filter((l) => l !== '')
    expect(lines.length).toBeGreaterThan(0)
    for (const line of lines) {
      const r = JSON.parse(line) as Record<string, unknown>
      expect(Object.keys(r).sort()).toEqual(['baseline', 'baselineValue', 'higherIsBetter', 'name', 'ratio', 'unit', 'value'])
      expect(r.unit).toBe('Gbit/s')
      expect(r.baseline).toBe('DataView.getUint16 loop')
      expect(typeof r.value === 'number' && r.value > 0).toBe(true)
      expect(typeof r.baselineValue === 'number' && r.baselineValue > 0).toBe(true)
      expect(r.ratio).toBeCloseTo((r.value as number) / (r.baselineValue as number), 9)
    }
  })

  it('prints the machine and a table in text mode', () => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--quick', '--filter', 'checksum'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 60_000,
    })
    expect(out).toMatch(/^machine: .+, \d+ cores, .+ GiB, Node v\d+\.\d+\.\d+, Linux /)
    expect(out).toMatch(/benchmark\s+\| value\s+\| baseline\s+\| baseline value\s+\| ratio/)
    expect(out).toMatch(/internet checksum, 1500 B packets \| [\d.]+ Gbit\/s \| DataView.getUint16 loop/)
  })

  it('fails with a non-zero exit when nothing matches the filter', () => {
    expect(() =>
      execFileSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--json', '--filter', 'no-such-benchmark'], { cwd: root, stdio: 'pipe', timeout: 30_000 }),
    ).toThrow(/no benchmarks matching "no-such-benchmark"/)
  })

  it('parses its arguments and formats ratios', () => {
    expect(parseRunnerArgs(['--json', '--quick', '--filter', 'wire'], '/x')).toEqual({ json: true, quick: true, filter: 'wire', dir: '/x' })
    expect(parseRunnerArgs(['--filter=ring'], '/x').filter).toBe('ring')
    expect(() => parseRunnerArgs(['--bogus'], '/x')).toThrow(/unknown argument --bogus/)
    const report = toReport({ name: 'n', value: 30, unit: 'ns/packet', baseline: 'b', baselineValue: 60, higherIsBetter: false })
    expect(report.ratio).toBe(0.5)
    const table = formatTable([report]).split('\n')
    expect(table).toHaveLength(3)
    expect(table[2]).toMatch(/^n\s+\| 30\.0 ns\/packet \| b\s+\| 60\.0 ns\/packet \| 0\.50x \(lower is better\)$/)
  })
})
