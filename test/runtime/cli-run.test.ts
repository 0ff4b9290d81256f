// `flowstack run` as a process: control socket, stat/flows --json from the
// CLI, SIGHUP reload, SIGTERM drain and exit 0; config errors stop it before
// anything opens, with check's messages.
import { afterAll, describe, expect, it } from 'vitest'
import { once } from 'node:events'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'fs-runtime-cli-'))
const socket = join(dir, 'ctl.sock')
let child: ChildProcess | undefined

afterAll(() => {
  if (child !== undefined && child.exitCode === null) child.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
})

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'runtime/cli.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 20000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function config(extraRules: object[] = []): string {
  return JSON.stringify({
    ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true } }],
    instances: [{ name: 'web', app: join(root, 'examples/demo/web.js'), port: 'p0', addresses: ['198.51.100.2/24'], settings: { httpPort: 80 } }],
    rules: [{ name: 'to-web', priority: 1, match: { localPrefix: '198.51.100.2/32' }, action: { instance: 'web' } }, ...extraRules],
    control: { path: socket },
  })
}

describe('flowstack run', () => {
  it('refuses a broken config with the messages of check, before opening anything', () => {
    const bad = join(dir, 'bad.json')
    writeFileSync(bad, JSON.stringify({ ports: [{ name: 'p0', memory: {} }], rules: [{ name: 'r', match: { localPorts: { from: 70000 } } }], control: { path: socket } }))
    const run = cli('run', bad)
    const check = cli('check', bad)
    expect(run.status).toBe(1)
    expect(check.status).toBe(1)
    expect(run.stderr).not.toBe('')
    expect(run.stderr).toBe(check.stderr)
    expect(existsSync(socket)).toBe(false)
  }, 30000)

  it('serves stat and flows, reloads on SIGHUP, and stops cleanly on SIGTERM', async () => {
    const file = join(dir, 'ok.json')
    writeFileSync(file, config())
    child = spawn(process.execPath, ['--import', 'tsx', 'runtime/cli.ts', 'run', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    const deadline = Date.now() + 20000
    while (!stdout.includes('flowstack: running')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`run did not start: ${stdout} ${stderr}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const stat = cli('stat', '--json', '--socket', socket)
    expect(stat.status).toBe(0)
    const parsed = JSON.parse(stat.stdout) as { instances: { name: string; state: string }[]; classifier: { ruleGeneration?: string } }
    expect(parsed.instances).toMatchObject([{ name: 'web', state: 'RUNNING' }])
    expect(parsed.classifier.ruleGeneration ?? '0').toBe('0')
    const flows = cli('flows', '--json', '--socket', socket)
    expect(flows.status).toBe(0)
    expect(JSON.parse(flows.stdout)).toEqual({}) // no traffic yet: no flows, total 0 (ProtoJSON omits defaults)

    writeFileSync(file, config([{ name: 'extra', priority: 5, match: { localPrefix: '203.0.113.0/24' }, action: { drop: {} } }]))
    child.kill('SIGHUP')
    const reloadDeadline = Date.now() + 10000
    while (!stderr.includes('reloaded 2 rule')) {
      if (Date.now() > reloadDeadline) throw new Error(`no reload: ${stderr}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const after = JSON.parse(cli('stat', '--json', '--socket', socket).stdout) as { classifier: { ruleGeneration: string; rules: { name: string }[] } }
    expect(after.classifier.ruleGeneration).toBe('1')
    expect(after.classifier.rules.map((r) => r.name)).toEqual(['to-web', 'extra'])
    const text = cli('stat', '--socket', socket)
    expect(text.stdout).toMatch(/web: running, restarts 0/)

    // An idle control client does not hold up the stop.
    const idle = createConnection(socket)
    await once(idle, 'connect')
    const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()))
    idle.on('error', () => {})
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)))
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    await idleClosed
    expect(stdout).toMatch(/SIGTERM, draining[\s\S]*flowstack: stopped/)
    expect(existsSync(socket)).toBe(false)
    const gone = cli('stat', '--socket', socket)
    expect(gone.status).toBe(1)
    expect(gone.stderr).toMatch(/no flowstack runtime at/)
  }, 60000)
})
