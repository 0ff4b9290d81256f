// Requests per second of a node:http app (examples/demo/web.js) in one
// instance behind a TUN port, driven by wrk from the kernel side (a
// namespace this benchmark creates, fs-rbench-*), next to the same handler
// on plain node:http over the kernel in that namespace, in the same run.
// Needs root.
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { parseConfigJson } from '../runtime/config/index.js'
import { Runtime } from '../runtime/runtime.js'
import type { BenchResult } from './types.js'

const BODY_BYTES = 1024
const web = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../examples/demo/web.js' : '../../examples/demo/web.js', import.meta.url))

function ipCmd(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 })
}

function wrk(ns: string, url: string, seconds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, 'wrk', '-t1', '-c8', `-d${seconds}s`, url], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 15) * 1000)
    child.on('exit', () => {
      clearTimeout(timer)
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)
      if (rps === null) reject(new Error(`wrk gave no figure: ${out}`))
      else resolve(Number(rps[1]))
    })
  })
}

const KERNEL_SERVER = `
const http = require('node:http')
const body = Buffer.alloc(${BODY_BYTES}, 'flowstack ')
http.createServer((req, res) => { res.setHeader('content-type', 'text/plain'); res.setHeader('x-instance', 'kernel'); res.end(body) })
  .listen(8081, '127.0.0.1', () => console.log('ready'))
`

export default async function run(opts: { quick: boolean }): Promise<BenchResult[]> {
  const seconds = opts.quick ? 1 : 10
  for (const name of ipCmd('netns', 'list').split('\n').map((l) => l.split(' ')[0])) {
    if (name.startsWith('fs-rbench-')) ipCmd('netns', 'del', name)
  }
  const ns = `fs-rbench-${randomBytes(3).toString('hex')}`
  ipCmd('netns', 'add', ns)
  ipCmd('-n', ns, 'link', 'set', 'lo', 'up')
  let runtime: Runtime | undefined
  const kernelServer = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', KERNEL_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    await new Promise<void>((resolve) => kernelServer.stdout.once('data', () => resolve()))
    const loaded = parseConfigJson({
      ports: [{ name: 'tun0', tun: { device: 'fsrb0', kernelAddresses: ['198.51.100.1/24'] } }],
      instances: [{ name: 'web', app: web, port: 'tun0', addresses: ['198.51.100.2/24'], settings: { httpPort: 80, bodyBytes: BODY_BYTES } }],
      rules: [{ name: 'web', priority: 1, match: { protocol: 'TCP', localPrefix: '198.51.100.2/32' }, action: { instance: 'web' } }],
    })
    runtime = await Runtime.start(loaded, { netns: ns, log: () => {} })
    await runtime.whenRunning()
    const viaRuntime = await wrk(ns, 'http://198.51.100.2/', seconds)
    const viaKernel = await wrk(ns, 'http://127.0.0.1:8081/', seconds)
    return [
      {
        name: `node:http in an instance behind TUN, wrk -c8, ${BODY_BYTES} B responses`,
        value: Math.round(viaRuntime),
        unit: 'requests/s',
        baseline: 'the same handler on plain node:http over the kernel (loopback in the namespace)',
        baselineValue: Math.round(viaKernel),
        higherIsBetter: true,
      },
    ]
  } finally {
    kernelServer.kill('SIGKILL')
    await runtime?.stop()
    ipCmd('netns', 'del', ns)
  }
}
