// Our TCP (stacks/core/tcp over the stack core's IP layer) against the Linux
// kernel's TCP through a TUN port in a network namespace this test creates:
// transfers both ways with content checked by SHA-256, the kernel connecting
// to us and us to the kernel, over IPv4 and IPv6, and refused connections
// both ways. Needs root (namespaces, TUN): without it the test FAILS.
import { createHash } from 'node:crypto'
import type { ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChannelEnd } from '../../../nexus/channel/index.js'
import type { LinkDevice, TxBuffer } from '../../../stacks/core/contracts.js'
import type { NexusPort } from '../../../nexus/ports/port.js'
import { openTun } from '../../../nexus/ports/tun.js'
import { createStackCore, type StackCore } from '../../../stacks/core/stack.js'
import type { TcpConnection } from '../../../stacks/core/tcp/connection.js'
import { TcpTransport } from '../../../stacks/core/tcp/transport.js'
import { parseIpAddress } from '../../../stacks/wire/address.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, ip as ipCmd, runIn, spawnIn } from '../../helpers/netns.js'
import { ChannelLink, realClock, realRandom, runShell } from '../channel-link.js'
import { seededRandom } from './harness.js'

const SIZE = 2 * 1024 * 1024
const DEV = 'fstcp0'
const KERNEL4 = '192.0.2.1'
const OURS4 = '192.0.2.2'
const KERNEL6 = '2001:db8:7::1'
const OURS6 = '2001:db8:7::2'

// A kernel server: sends SIZE seeded-random bytes, reads until EOF, prints both digests.
const KERNEL_SERVER = `
import socket, sys, hashlib, random
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(1)
s.settimeout(20)
print('ready', flush=True)
c, _ = s.accept()
c.settimeout(20)
data = random.Random(7).randbytes(n)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
h = hashlib.sha256()
got = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    got += len(b)
print('sent', hashlib.sha256(data).hexdigest(), 'received', got, h.hexdigest(), flush=True)
c.close()
`

// A kernel client: connects, sends SIZE bytes and half-closes (from a thread) while reading the echo until EOF.
const KERNEL_CLIENT = `
import socket, sys, hashlib, random, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(20)
try:
    s.connect((host, port))
except ConnectionRefusedError:
    print('REFUSED', flush=True)
    sys.exit(0)
data = random.Random(9).randbytes(n)
# Send from a thread while reading the echo here: an echo peer stalls a client that only sends.
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
buf = bytearray()
while True:
    b = s.recv(65536)
    if not b:
        break
    buf += b
t.join()
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
# struct tcp_info: tcpi_options is byte 5 (TCPI_OPT_TIMESTAMPS 1, SACK 2, WSCALE 4); snd_wscale:4|rcv_wscale:4 is byte 6.
print('echo', 'ok' if bytes(buf) == data else 'BAD', len(buf), 'options', info[5], flush=True)
`

let ns = ''
let port: NexusPort | null = null
let core: StackCore
let tcp: TcpTransport
let shell: { stop(): Promise<void> } | null = null

beforeAll(async () => {
  cleanupNamespaces('fs-tcp-')
  ns = createNamespace('tcp')
  port = await openTun({ name: DEV, netns: ns })
  ipCmd('-n', ns, 'addr', 'add', `${KERNEL4}/24`, 'dev', DEV)
  ipCmd('-n', ns, 'addr', 'add', `${KERNEL6}/64`, 'dev', DEV, 'nodad')
  const end = port.queues[0]
  core = createStackCore({ link: new ChannelLink(end, 'ip', port.info.mtu), clock: realClock, random: realRandom, addresses: [`${OURS4}/24`, `${OURS6}/64`] })
  tcp = new TcpTransport({ ip: core, random: () => realRandom.nextUint32(), clock: () => realClock.now() })
  core.registerTransport(tcp)
  shell = runShell(end, core)
}, 20_000)

afterAll(async () => {
  await shell?.stop()
  await port?.close()
  if (ns !== '') deleteNamespace(ns)
})

function waitForLine(child: ChildProcess, text: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`timed out waiting for "${text}"; got: ${out}`)), timeoutMs)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      // Only whole lines count: a chunk may end in the middle of one.
      if (out.split('\n').slice(0, -1).some((line) => line.includes(text))) {
        clearTimeout(timer)
        resolve(out)
      }
    })
  })
}

function until(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  return new Promise((resolve) => {
    const check = () => {
      if (predicate()) resolve(true)
      else if (Date.now() > deadline) resolve(false)
      else setTimeout(check, 10)
    }
    check()
  })
}

/** A pattern generator that is not the kernel's: our direction's bytes. */
function ourBytes(n: number): Uint8Array {
  const b = new Uint8Array(n)
  let x = 12345
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    b[i] = x >>> 24
  }
  return b
}

for (const [family, kernel, ours] of [
  [4, KERNEL4, OURS4],
  [6, KERNEL6, OURS6],
] as const) {
  describe(`TCP against the Linux kernel over IPv${family} (TUN)`, () => {
    it('connects to a kernel server and transfers 2 MB each way, SHA-256 equal', async () => {
      const server = spawnIn(ns, ['python3', '-c', KERNEL_SERVER, kernel, '5001', String(SIZE)])
      try {
        await waitForLine(server, 'ready', 10_000)
        const report = waitForLine(server, 'received', 30_000)
        const payload = ourBytes(SIZE)
        const hash = createHash('sha256')
        let received = 0
        let sent = 0
        let peerClosed = false
        const errors: string[] = []
        const sink = new Uint8Array(65536)
        const conn: TcpConnection = tcp.layer.connect({ local: parseIpAddress(ours)!, remote: parseIpAddress(kernel)!, remotePort: 5001 })
        const pump = () => {
          while (sent < SIZE) {
            const n = conn.send(payload, sent, Math.min(65536, SIZE - sent))
            sent += n
            if (n === 0) return
          }
          conn.shutdownWrite()
        }
        conn.events = {
          onConnected: pump,
          onWritable: pump,
          onReadable: () => {
            for (let n = conn.read(sink); n > 0; n = conn.read(sink)) {
              hash.update(sink.subarray(0, n))
              received += n
            }
          },
          onPeerClosed: () => {
            peerClosed = true
          },
          onError: (e) => errors.push(e),
        }
        core.link.flush?.()
        const out = await report
        expect(await until(() => peerClosed, 10_000)).toBe(true)
        expect(errors).toEqual([])
        expect(received).toBe(SIZE)
        const expectedFromKernel = out.match(/sent ([0-9a-f]{64})/)![1]
        expect(hash.digest('hex')).toBe(expectedFromKernel)
        const m = out.match(/received (\d+) ([0-9a-f]{64})/)!
        expect(Number(m[1])).toBe(SIZE)
        expect(m[2]).toBe(createHash('sha256').update(payload).digest('hex'))
        // The kernel offered window scale, SACK and timestamps; we accepted them.
        expect(conn.tsEnabled).toBe(true)
        expect(conn.sackEnabled).toBe(true)
        expect(conn.sndWndShift).toBeGreaterThan(0)
      } finally {
        server.kill('SIGKILL')
      }
    }, 40_000)

    it('accepts a kernel client and echoes 2 MB back; the kernel negotiated timestamps, SACK and window scaling', async () => {
      const sink = new Uint8Array(65536)
      let accepted = 0
      const listener = tcp.layer.listen(null, 7000 + family, 4, (conn) => {
        accepted++
        // Like a Node echo with pipe(): read a chunk, write it; when write takes only part, wait for onWritable (drain).
        let pendingOffset = 0
        let pendingLength = 0
        let peerDone = false
        const move = () => {
          for (;;) {
            if (pendingLength === 0) {
              const n = conn.read(sink)
              if (n === 0) break
              pendingOffset = 0
              pendingLength = n
            }
            const w = conn.send(sink, pendingOffset, pendingLength)
            pendingOffset += w
            pendingLength -= w
            if (pendingLength > 0) return
          }
          if (peerDone && conn.readableBytes === 0) conn.shutdownWrite()
        }
        conn.events = {
          onReadable: move,
          onWritable: move,
          onPeerClosed: () => {
            peerDone = true
            move()
          },
        }
      })
      try {
        const r = await runIn(ns, ['python3', '-c', KERNEL_CLIENT, ours, String(7000 + family), String(SIZE)], 30_000)
        expect(r.stderr).toBe('')
        const m = r.stdout.match(/echo (\w+) (\d+) options (\d+)/)
        expect(m).not.toBeNull()
        expect(m![1]).toBe('ok')
        expect(Number(m![2])).toBe(SIZE)
        // TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE
        expect(Number(m![3]) & 7).toBe(7)
        expect(accepted).toBe(1)
      } finally {
        tcp.layer.closeListener(listener)
      }
    }, 40_000)

    it('refused both ways: the kernel gets RST from our closed port; our connect to its closed port fails ECONNREFUSED', async () => {
      const r = await runIn(ns, ['python3', '-c', KERNEL_CLIENT, ours, '9', '10'], 15_000)
      expect(r.stdout).toContain('REFUSED')
      const errors: string[] = []
      const conn = tcp.layer.connect({ local: parseIpAddress(ours)!, remote: parseIpAddress(kernel)!, remotePort: 9 })
      conn.events = { onError: (e) => errors.push(e) }
      core.link.flush?.()
      expect(await until(() => errors.length > 0, 5_000)).toBe(true)
      expect(errors).toEqual(['ECONNREFUSED'])
    }, 20_000)
  })
}

// ---------------------------------------------------------------- loss

/** Drops a seeded fraction of the frames we transmit (the kernel's side has no netem here). */
class LossyLink implements LinkDevice {
  dropped = 0
  constructor(
    private readonly inner: ChannelLink,
    private readonly loss: number,
    private readonly rnd: () => number,
  ) {}
  get linkType() {
    return this.inner.linkType
  }
  get mtu() {
    return this.inner.mtu
  }
  acquireTx(): TxBuffer | null {
    return this.inner.acquireTx()
  }
  transmit(index: number, length: number): void {
    if (this.rnd() / 4294967296 < this.loss) {
      this.dropped++
      this.inner.abortTx(index)
      return
    }
    this.inner.transmit(index, length)
  }
  abortTx(index: number): void {
    this.inner.abortTx(index)
  }
  flush(): void {
    this.inner.flush()
  }
}

/** runShell, dropping a seeded fraction of the frames the kernel sends us. */
function runLossyShell(end: ChannelEnd, target: StackCore, loss: number, rnd: () => number, counter: { dropped: number }): { stop(): Promise<void> } {
  let stopped = false
  const loop = (async () => {
    while (!stopped && !end.peerClosed) {
      end.receive(256, (index, length) => {
        if (rnd() / 4294967296 < loss) counter.dropped++
        else target.input(end.buffer(index).subarray(0, length))
        end.release(index)
      })
      target.poll()
      end.flush()
      await end.waitForWork(Math.max(1, Math.min(100, target.nextTimeout() - realClock.now())))
    }
  })()
  return {
    async stop() {
      stopped = true
      end.wake()
      await loop
    },
  }
}

describe('TCP against the Linux kernel with 3% loss both ways (TUN)', () => {
  const DEV_LOSSY = 'fstcp1'
  let lossyPort: NexusPort | null = null
  let lossyCore: StackCore
  let lossyTcp: TcpTransport
  let lossyShell: { stop(): Promise<void> } | null = null
  let egress: LossyLink
  const ingress = { dropped: 0 }

  beforeAll(async () => {
    lossyPort = await openTun({ name: DEV_LOSSY, netns: ns })
    ipCmd('-n', ns, 'addr', 'add', '203.0.113.1/24', 'dev', DEV_LOSSY)
    ipCmd('-n', ns, 'addr', 'add', '2001:db8:8::1/64', 'dev', DEV_LOSSY, 'nodad')
    const end = lossyPort.queues[0]
    egress = new LossyLink(new ChannelLink(end, 'ip', lossyPort.info.mtu), 0.03, seededRandom(5))
    lossyCore = createStackCore({ link: egress, clock: realClock, random: realRandom, addresses: ['203.0.113.2/24', '2001:db8:8::2/64'] })
    lossyTcp = new TcpTransport({ ip: lossyCore, random: () => realRandom.nextUint32(), clock: () => realClock.now() })
    lossyCore.registerTransport(lossyTcp)
    lossyShell = runLossyShell(end, lossyCore, 0.03, seededRandom(6), ingress)
  }, 20_000)

  afterAll(async () => {
    await lossyShell?.stop()
    await lossyPort?.close()
  })

  for (const [kernel, ours, portNumber] of [
    ['203.0.113.1', '203.0.113.2', 5101],
    ['2001:db8:8::1', '2001:db8:8::2', 5102],
  ] as const) {
    it(`recovers from loss against the kernel (${kernel}): 2 MB each way, SHA-256 equal`, async () => {
      const server = spawnIn(ns, ['python3', '-c', KERNEL_SERVER, kernel, String(portNumber), String(SIZE)])
      try {
        await waitForLine(server, 'ready', 10_000)
        const report = waitForLine(server, 'received', 40_000)
        const payload = ourBytes(SIZE)
        const hash = createHash('sha256')
        let received = 0
        let sent = 0
        const errors: string[] = []
        const sink = new Uint8Array(65536)
        const conn = lossyTcp.layer.connect({ local: parseIpAddress(ours)!, remote: parseIpAddress(kernel)!, remotePort: portNumber })
        const pump = () => {
          while (sent < SIZE) {
            const n = conn.send(payload, sent, Math.min(65536, SIZE - sent))
            sent += n
            if (n === 0) return
          }
          conn.shutdownWrite()
        }
        conn.events = {
          onConnected: pump,
          onWritable: pump,
          onReadable: () => {
            for (let n = conn.read(sink); n > 0; n = conn.read(sink)) {
              hash.update(sink.subarray(0, n))
              received += n
            }
          },
          onError: (e) => errors.push(e),
        }
        lossyCore.link.flush?.()
        const out = await report
        expect(await until(() => received === SIZE, 10_000)).toBe(true)
        expect(errors).toEqual([])
        expect(hash.digest('hex')).toBe(out.match(/sent ([0-9a-f]{64})/)![1])
        const m = out.match(/received (\d+) ([0-9a-f]{64})/)!
        expect(Number(m[1])).toBe(SIZE)
        expect(m[2]).toBe(createHash('sha256').update(payload).digest('hex'))
        expect(egress.dropped).toBeGreaterThan(0)
        expect(ingress.dropped).toBeGreaterThan(0)
        expect(lossyTcp.layer.counters.retransSegs).toBeGreaterThan(0)
      } finally {
        server.kill('SIGKILL')
      }
    }, 60_000)
  }
})
