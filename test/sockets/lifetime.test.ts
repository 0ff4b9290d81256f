// Whether a process with stacks in it can end by itself: like node:net, only
// what is ref'd (a listening server, an open socket) keeps it alive, not an
// idle stack or memory wire waiting for packets.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../../', import.meta.url))

let lastOutput = ''

/** Runs the child; resolves with its exit code, or 'alive' if it still runs `graceMs` after saying ready. */
function run(mode: string, graceMs: number): Promise<number | 'alive'> {
  lastOutput = ''
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/sockets/lifetime-child.ts', mode], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const hardStop = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child ${mode} never said ready: ${stderr}`))
    }, 20_000)
    child.stdout.on('data', (d: Buffer) => {
      lastOutput += d.toString()
      if (!d.toString().includes('ready')) return
      clearTimeout(hardStop)
      const grace = setTimeout(() => {
        child.kill('SIGKILL')
        resolve('alive')
      }, graceMs)
      child.once('exit', (code) => {
        clearTimeout(grace)
        resolve(code ?? -1)
      })
    })
  })
}

describe('process lifetime with stacks', () => {
  it('an idle stack on a memory wire lets the process end; a listening server keeps it; unref() lets it go', async () => {
    expect(await run('idle', 5000)).toBe(0)
    expect(await run('impair', 5000)).toBe(0)
    expect(await run('listening', 1500)).toBe('alive')
    expect(await run('unref', 5000)).toBe(0)
  }, 60_000)

  it('a bound dgram socket keeps it alive until unref(); a destroyed TCP socket first delivers what it wrote, and its FIN', async () => {
    expect(await run('udp', 1500)).toBe('alive')
    expect(await run('udp-unref', 5000)).toBe(0)
    expect(await run('destroy', 10000)).toBe(0)
    expect(lastOutput).toContain('got 200000')
  }, 60_000)
})
