// Child processes inside namespaces for the kernel port tests.
import type { ChildProcess } from 'node:child_process'
import { spawnIn } from '../helpers/netns.js'

export interface RunningProcess {
  child: ChildProcess
  /** Resolves with everything printed once the process exits (killed after `timeoutMs`). */
  exited: Promise<{ code: number | null; stdout: string; stderr: string }>
  /** Resolves when stdout contains `text` (rejects after `timeoutMs`). */
  printed(text: string, timeoutMs?: number): Promise<void>
}

export function start(ns: string, cmd: string[], timeoutMs = 20_000): RunningProcess {
  const child = spawnIn(ns, cmd)
  let stdout = ''
  let stderr = ''
  const listeners: (() => void)[] = []
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString()
    for (const l of listeners) l()
  })
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
  return {
    child,
    exited,
    printed(text: string, waitMs = 10_000): Promise<void> {
      return new Promise((resolve, reject) => {
        if (stdout.includes(text)) return resolve()
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${JSON.stringify(text)}; stdout=${stdout} stderr=${stderr}`)), waitMs)
        listeners.push(() => {
          if (stdout.includes(text)) {
            clearTimeout(t)
            resolve()
          }
        })
      })
    },
  }
}
