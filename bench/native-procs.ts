// Processes and paths shared by the native benchmarks (not a benchmark itself:
// the runner only picks up *.bench.js).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 })
}

export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'bench', 'c', 'nexus_loop.c'))) return dir
    dir = dirname(dir)
  }
  throw new Error('cannot find bench/c/nexus_loop.c')
}

export interface Proc {
  child: ChildProcess
  done: Promise<string>
  printed(text: string): Promise<void>
}

export function run(ns: string, cmd: string[], timeoutMs = 30_000): Proc {
  const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const waiters: (() => void)[] = []
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString()
    for (const w of waiters) w()
  })
  child.stderr!.on('data', () => {})
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const done = new Promise<string>((resolve) =>
    child.on('close', () => {
      clearTimeout(timer)
      resolve(out)
    }),
  )
  return {
    child,
    done,
    printed: (text) =>
      new Promise((resolve, reject) => {
        if (out.includes(text)) return resolve()
        const t = setTimeout(() => reject(new Error(`no "${text}" from ${cmd[0]}`)), 10_000)
        waiters.push(() => {
          if (out.includes(text)) {
            clearTimeout(t)
            resolve()
          }
        })
      }),
  }
}
