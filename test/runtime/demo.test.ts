// `flowstack demo` (what `npm start` runs), as a user starts it: the CLI in a
// child process, no privileges; it must end by itself with exit 0 and a report.
import { describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))

describe('flowstack demo', () => {
  it('runs the example config on memory ports and reports requests, bytes and counters', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'runtime/cli.ts', 'demo'], { cwd: root, encoding: 'utf8', timeout: 60000 })
    expect(run.error).toBeUndefined()
    expect(run.stderr).not.toMatch(/Error/)
    expect(run.status).toBe(0)
    const out = run.stdout
    expect(out).toMatch(/requests done: 60 \(failed 0\), 245760 bytes from web/)
    expect(out).toMatch(/kernel side: 3 requests, \d+ bytes; blocked network: dropped/)
    expect(out).toMatch(/instance web +running +rx [1-9]\d* tx [1-9]\d* packets, restarts 0/)
    expect(out).toMatch(/instance client +running +rx [1-9]\d* tx [1-9]\d* packets/)
    const hits = /rule hits: drop-blocked (\d+), admin-to-kernel (\d+), web-http (\d+), web-http6 (\d+)/.exec(out)
    expect(hits).not.toBeNull()
    expect(hits!.slice(1).map(Number).every((n) => n >= 1)).toBe(true)
    expect(out).toMatch(/demo: OK/)
  }, 70000)
})
