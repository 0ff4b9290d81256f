// Network namespaces for integration tests. Each test area names its
// namespaces `fs-<area>-<random>` so leftovers from a crashed run can be
// found and removed by prefix. Creating a namespace needs root (CAP_SYS_ADMIN):
// when it cannot be created this throws, so the test FAILS instead of passing
// vacuously.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'

export interface ExecResult {
  stdout: string
  stderr: string
  status: number
}

/** Runs `ip` with arguments; throws with stderr on failure. */
export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })
}

export function listNamespaces(): string[] {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 })
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0])
    .filter((name): name is string => name !== undefined && name.length > 0)
}

/** Deletes every namespace whose name starts with `prefix` (leftovers of earlier runs). */
export function cleanupNamespaces(prefix: string): void {
  if (!prefix.startsWith('fs-')) throw new Error(`refusing to clean namespaces outside fs-*: ${prefix}`)
  for (const name of listNamespaces()) {
    if (name.startsWith(prefix)) deleteNamespace(name)
  }
}

export function deleteNamespace(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 10_000 })
  } catch {
    // already gone
  }
}

/** Creates `fs-<area>-<random>` with loopback up. */
export function createNamespace(area: string): string {
  const name = `fs-${area}-${randomBytes(3).toString('hex')}`
  try {
    ip('netns', 'add', name)
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? ''
    throw new Error(`cannot create network namespace ${name} (tests need root): ${stderr.trim()}`)
  }
  ip('-n', name, 'link', 'set', 'lo', 'up')
  return name
}

/** Runs a command inside a namespace, synchronously; never throws on a non-zero exit. */
export function execIn(ns: string, cmd: string[], timeoutMs = 10_000): ExecResult {
  try {
    const stdout = execFileSync('ip', ['netns', 'exec', ns, ...cmd], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    })
    return { stdout, stderr: '', status: 0 }
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; status?: number | null }
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', status: e.status ?? -1 }
  }
}

/** Runs a command inside a namespace asynchronously (so the caller's event loop keeps turning). */
export function runIn(ns: string, cmd: string[], timeoutMs = 20_000, input?: Buffer): Promise<ExecResult & { stdoutBytes: Buffer }> {
  return new Promise((resolve) => {
    const child: ChildProcess = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout!.on('data', (d: Buffer) => out.push(d))
    child.stderr!.on('data', (d: Buffer) => err.push(d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('close', (code) => {
      clearTimeout(timer)
      const stdoutBytes = Buffer.concat(out)
      resolve({ stdout: stdoutBytes.toString('utf8'), stdoutBytes, stderr: Buffer.concat(err).toString('utf8'), status: code ?? -1 })
    })
    if (input !== undefined) child.stdin!.end(input)
    else child.stdin!.end()
  })
}

/** Starts a long-running command inside a namespace; the caller kills it. */
export function spawnIn(ns: string, cmd: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] })
}

/** A veth pair with one end in each namespace (or both in one when `nsB` is omitted). */
export function createVethPair(nsA: string, nameA: string, nameB: string, nsB: string = nsA): void {
  ip('-n', nsA, 'link', 'add', nameA, 'type', 'veth', 'peer', 'name', nameB, 'netns', nsB)
}

/** Resolves once a child process has printed `text` (stdout or stderr); rejects after `timeoutMs`. */
export function waitForOutput(child: ChildProcess, text: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = ''
    const timer = setTimeout(() => reject(new Error(`timed out waiting for "${text}": ${seen}`)), timeoutMs)
    const onData = (d: Buffer): void => {
      seen += d.toString()
      if (seen.includes(text)) {
        clearTimeout(timer)
        resolve()
      }
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
  })
}
