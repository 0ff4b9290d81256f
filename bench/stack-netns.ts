// The few network-namespace helpers the TUN entry of bench/stack.bench.ts
// needs (the same commands as test/helpers/netns.ts, which the built package
// does not ship). Names are always `fs-sbench-<random>` so leftovers of a
// crashed run are found and removed by prefix.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'

const PREFIX = 'fs-sbench-'

/** Runs `ip` with arguments; throws with stderr on failure. */
export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })
}

export function deleteNamespace(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 10_000 })
  } catch {
    // already gone
  }
}

/** Deletes fs-sbench-* namespaces left by an earlier run. */
export function cleanupNamespaces(): void {
  for (const line of ip('netns', 'list').split('\n')) {
    const name = line.trim().split(/\s+/)[0]
    if (name !== undefined && name.startsWith(PREFIX)) deleteNamespace(name)
  }
}

/** Creates `fs-sbench-<random>` with loopback up; throws (with the reason) without root. */
export function createNamespace(): string {
  const name = `${PREFIX}${randomBytes(3).toString('hex')}`
  try {
    ip('netns', 'add', name)
  } catch (err) {
    throw new Error(`cannot create network namespace ${name}: ${((err as { stderr?: string }).stderr ?? String(err)).trim()}`)
  }
  ip('-n', name, 'link', 'set', 'lo', 'up')
  return name
}

/** Starts a command inside a namespace; the caller kills it. */
export function spawnIn(ns: string, cmd: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] })
}

/** Runs a command inside a namespace without blocking the event loop; never throws on a non-zero exit. */
export function runIn(ns: string, cmd: string[], timeoutMs: number): Promise<{ stdout: string; stderr: string; status: number }> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ stdout, stderr, status: code ?? -1 })
    })
  })
}
