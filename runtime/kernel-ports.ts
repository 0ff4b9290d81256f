// One port namespace (DESIGN.md §5): on an address an instance shares with
// the kernel (a host TAP's), the instance's TCP ports are reserved in the
// kernel (a kernel socket bound on them, so no kernel program can take them),
// and ports the kernel already listens on are refused to the instance with
// EADDRINUSE.
//
// Reservations are held by a small helper process started in the kernel's
// network namespace (the runtime's own, or `ip netns exec` into the one the
// runtime was told to use). Its /proc/<pid>/net/tcp{,6} also lists that
// namespace's listening sockets, which instance workers read synchronously
// when they listen (listen() must answer at once, like bind(2)).
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createInterface, type Interface } from 'node:readline'
import { FlowstackError } from '../common/errors.js'

// The helper: one line per request ("reserve|release <address> <port>"),
// one line per answer ("ok" or an errno code). Reserving sockets accept
// nothing: a kernel client that connects is reset at once.
const HELPER = `
const net = require('node:net')
const held = new Map()
const out = (line) => process.stdout.write(line + '\\n')
// One request at a time, in order: a release right after its reserve must
// find the socket bound, and answers must come in the order of the requests.
const handle = (line) => new Promise((done) => {
  const [op, address, port] = line.split(' ')
  const key = address + ' ' + port
  if (op === 'release') {
    held.get(key)?.close()
    held.delete(key)
    out('ok')
    return done()
  }
  if (held.has(key)) {
    out('ok')
    return done()
  }
  const server = net.createServer((socket) => socket.resetAndDestroy())
  server.once('error', (err) => {
    out(err.code || 'EINVAL')
    done()
  })
  server.listen({ host: address, port: Number(port), exclusive: true, backlog: 1 }, () => {
    held.set(key, server)
    out('ok')
    done()
  })
})
let queue = Promise.resolve()
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  queue = queue.then(() => handle(line))
})
process.stdin.on('end', () => process.exit(0))
out('ready ' + process.pid)
`

export class KernelPorts {
  private readonly answers: ((line: string) => void)[] = []
  private closed = false

  private constructor(
    private readonly child: ChildProcess,
    lines: Interface,
    /** /proc/<pid>/net of a process in the kernel's namespace. */
    readonly procNet: string,
  ) {
    lines.on('line', (line) => this.answers.shift()?.(line))
    child.on('exit', () => {
      for (const answer of this.answers.splice(0)) answer('EPIPE')
    })
  }

  static async start(netns?: string): Promise<KernelPorts> {
    const argv = [process.execPath, '-e', HELPER]
    const child = netns === undefined ? spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'ignore'] }) : spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['pipe', 'pipe', 'ignore'] })
    const lines = createInterface({ input: child.stdout! })
    const pid = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new FlowstackError('RUNTIME_KERNEL_PORTS', 'the port reservation helper did not start in 10 s')), 10000)
      child.once('error', (err) => reject(new FlowstackError('RUNTIME_KERNEL_PORTS', `cannot start the port reservation helper: ${err.message}`)))
      child.once('exit', (code) => reject(new FlowstackError('RUNTIME_KERNEL_PORTS', `the port reservation helper exited (${code})`)))
      lines.once('line', (line) => {
        clearTimeout(timer)
        resolve(Number(/^ready (\d+)$/.exec(line)?.[1] ?? 0))
      })
    }).catch((err: unknown) => {
      child.kill()
      throw err
    })
    child.removeAllListeners('exit')
    child.removeAllListeners('error')
    child.on('error', () => {}) // seen as answers of EPIPE
    return new KernelPorts(child, lines, `/proc/${pid}/net`)
  }

  private request(line: string): Promise<string> {
    if (this.closed) return Promise.resolve('EPIPE')
    return new Promise((resolve) => {
      this.answers.push(resolve)
      this.child.stdin!.write(`${line}\n`)
    })
  }

  /** Binds a kernel socket on address:port; 'ok' or the errno code (EADDRINUSE: the kernel has it). */
  reserve(address: string, port: number): Promise<string> {
    return this.request(`reserve ${address} ${port}`)
  }

  release(address: string, port: number): Promise<string> {
    return this.request(`release ${address} ${port}`)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.child.stdin!.end()
    this.child.kill()
  }
}

/** A listening TCP socket from /proc/net/tcp{,6}: its local address (canonical text) and port. */
export interface KernelListener {
  address: string
  port: number
}

/**
 * The LISTEN sockets of a /proc/net/tcp or tcp6 table. Malformed lines are
 * skipped (the table's format is the kernel's; an unknown line is not ours
 * to fail on).
 */
export function parseProcNetTcp(text: string, ipVersion: 4 | 6): KernelListener[] {
  const out: KernelListener[] = []
  const lines = text.split('\n')
  for (let i = 1; i < lines.length; i++) {
    const fields = lines[i].trim().split(/\s+/)
    if (fields.length < 4 || fields[3] !== '0A') continue // 0A = TCP_LISTEN
    const colon = fields[1].indexOf(':')
    if (colon < 0) continue
    const hex = fields[1].slice(0, colon)
    const port = Number.parseInt(fields[1].slice(colon + 1), 16)
    const address = ipVersion === 4 ? procIpv4(hex) : procIpv6(hex)
    if (address !== null && Number.isInteger(port)) out.push({ address, port })
  }
  return out
}

/** /proc prints each 32-bit word in host byte order (little-endian here). */
function word(hex: string, at: number): number[] {
  const bytes = [0, 1, 2, 3].map((b) => Number.parseInt(hex.slice(at + b * 2, at + b * 2 + 2), 16))
  return bytes.reverse()
}

function procIpv4(hex: string): string | null {
  if (!/^[0-9A-Fa-f]{8}$/.test(hex)) return null
  return word(hex, 0).join('.')
}

function procIpv6(hex: string): string | null {
  if (!/^[0-9A-Fa-f]{32}$/.test(hex)) return null
  const bytes = [0, 8, 16, 24].flatMap((at) => word(hex, at))
  const groups: string[] = []
  for (let g = 0; g < 8; g++) groups.push(((bytes[g * 2] << 8) | bytes[g * 2 + 1]).toString(16))
  // Canonical enough for comparison with formatIpAddress output: compress the longest zero run.
  let best = -1
  let bestLength = 0
  for (let g = 0; g < 8; ) {
    if (groups[g] !== '0') {
      g++
      continue
    }
    let end = g
    while (end < 8 && groups[end] === '0') end++
    if (end - g > bestLength && end - g > 1) {
      best = g
      bestLength = end - g
    }
    g = end
  }
  if (best < 0) return groups.join(':')
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`
}

/** Whether the kernel listens on `port` on `address` or on its family's wildcard. */
export function kernelListens(procNet: string, ipVersion: 4 | 6, address: string, port: number): boolean {
  const table = (version: 4 | 6): KernelListener[] => {
    try {
      return parseProcNetTcp(readFileSync(`${procNet}/${version === 4 ? 'tcp' : 'tcp6'}`, 'utf8'), version)
    } catch {
      return [] // no such table (no IPv6): nothing listens there
    }
  }
  if (ipVersion === 6) return table(6).some((l) => l.port === port && (l.address === address || l.address === '::'))
  if (table(4).some((l) => l.port === port && (l.address === address || l.address === '0.0.0.0'))) return true
  // A dual-stack "::" socket takes IPv4 too (IPV6_V6ONLY off, Linux's default).
  return table(6).some((l) => l.port === port && l.address === '::')
}
