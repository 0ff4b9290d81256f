// `flowstack classify` over a capture of real traffic recorded between two
// namespaces (test/fixtures/classify/record.sh), and over a large synthetic
// capture where the worker-split result must equal the single pass.
import { PassThrough } from 'node:stream'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { classifyCommand } from '../../runtime/commands/classify.js'
import { FileCaptureSink, LINKTYPE_RAW, PcapWriter } from '../../nexus/middleware/pcap.js'
import { buildPacket, fragmentPair } from '../classifier/packets.js'

const fixtures = new URL('../fixtures/classify/', import.meta.url).pathname
const scratch = mkdtempSync(join(tmpdir(), 'fs-classify-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough()
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') }
}

interface Line {
  frame: number
  action: string
  instance?: string
  rule: string | null
  reason: string
}

async function run(file: string, options: { chunkFrames?: number; workers?: number; port?: string; config?: string } = {}): Promise<{ code: number; lines: Line[]; raw: string; stderr: string }> {
  const out = capture()
  const err = capture()
  const code = await classifyCommand(file, { config: options.config ?? join(fixtures, 'config.json'), ...options, stdout: out.stream, stderr: err.stream })
  const raw = out.text()
  return { code, raw, lines: raw === '' ? [] : raw.trimEnd().split('\n').map((l) => JSON.parse(l) as Line), stderr: err.text() }
}

describe('flowstack classify', () => {
  it('gives the decisions the rules imply on real IPv4/IPv6 TCP, UDP, fragment and ARP traffic', async () => {
    const { code, lines, stderr } = await run(join(fixtures, 'traffic.pcapng'))
    expect(code).toBe(0)
    expect(lines).toHaveLength(74)
    expect(lines.map((l) => l.frame)).toEqual(Array.from({ length: 74 }, (_, i) => i + 1))
    const at = (frame: number): string => {
      const l = lines[frame - 1]
      return [l.action, l.instance ?? '-', l.rule ?? '-', l.reason].join(' ')
    }
    // ARP request and reply: not IP, the port's default (kernel).
    expect(at(7)).toBe('kernel - - not-ip')
    expect(at(8)).toBe('kernel - - not-ip')
    // ICMP echo to 198.51.100.2: the no-ping rule, then its flow; replies (local .1) default.
    expect(at(9)).toBe('drop - no-ping rule')
    expect(at(10)).toBe('kernel - - default')
    expect(at(11)).toBe('drop - no-ping flow')
    // TCP 443 over IPv4 and IPv6: rule "web", then the flow; the server's replies are another key.
    expect(at(19)).toBe('instance web web rule')
    expect(at(20)).toBe('kernel - - default')
    expect(at(21)).toBe('instance web web flow')
    expect(at(29)).toBe('instance web web rule')
    expect(at(31)).toBe('instance web web flow')
    // TCP 8080: the admin rule sends it to the kernel.
    expect(at(39)).toBe('kernel - admin rule')
    // UDP 53: the dns rule only covers 2001:db8::/32.
    expect(at(49)).toBe('kernel - - default')
    expect(at(51)).toBe('instance web dns rule')
    // A fragmented IPv6 UDP datagram to port 53: every fragment follows the first.
    expect([at(59), at(60), at(61)]).toEqual(['instance web dns rule', 'instance web dns rule', 'instance web dns rule'])
    // A fragmented IPv4 UDP datagram to port 53: default, all three alike.
    expect([at(53), at(54), at(55)]).toEqual(['kernel - - default', 'kernel - - default', 'kernel - - default'])
    // A fragmented ICMP echo to 198.51.100.2: both fragments dropped by the no-ping flow.
    expect([at(66), at(67)]).toEqual(['drop - no-ping flow', 'drop - no-ping flow'])
    const count = (pred: (l: Line) => boolean): number => lines.filter(pred).length
    expect(stderr).toContain('74 frames\n')
    expect(stderr).toContain(`instance ${count((l) => l.action === 'instance')}`)
    expect(stderr).toContain(`drop ${count((l) => l.action === 'drop')}`)
    expect(stderr).toContain(`not-ip ${count((l) => l.reason === 'not-ip')}`)
    // No rule field for non-rule decisions; instance only for instance actions.
    for (const l of lines) {
      expect('instance' in l).toBe(l.action === 'instance')
      if (l.reason === 'default' || l.reason === 'not-ip') expect(l.rule).toBeNull()
    }
  })

  it('splits a large capture across workers with output identical to one pass, in frame order', async () => {
    const file = join(scratch, 'large.pcap')
    const sink = new FileCaptureSink(file)
    const writer = new PcapWriter(sink, { linkType: LINKTYPE_RAW, nanosecond: true })
    // Deterministic pseudo-random traffic: repeated flows, fragments in and
    // out of order (also across chunk borders), first fragments lost, time gaps.
    let seed = 12345
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
      return (seed >>> 8) % n
    }
    let time = 0
    let frames = 0
    const write = (p: Uint8Array): void => {
      time += 1 + random(3) * (random(50) === 0 ? 4000 : 1)
      writer.writePacket(p, Math.floor(time / 1000), (time % 1000) * 1e6)
      frames++
    }
    for (let i = 0; i < 2500; i++) {
      const v6 = random(2) === 0
      const spec = {
        ipVersion: (v6 ? 6 : 4) as 4 | 6,
        protocol: random(3) === 0 ? 17 : 6,
        src: v6 ? `2001:db8::${1 + random(6)}` : `198.51.100.${1 + random(6)}`,
        dst: v6 ? '2001:db8::2' : '198.51.100.2',
        srcPort: 40000 + random(20),
        dstPort: [443, 53, 8080, 22][random(4)],
      }
      const kind = random(10)
      if (kind < 7) write(buildPacket(spec))
      else {
        const [first, later] = fragmentPair(spec, i)
        if (kind === 7) {
          write(first)
          write(later)
        } else if (kind === 8) {
          write(later)
          if (random(3) > 0) write(first)
        } else {
          write(later)
          for (let k = random(150); k > 0; k--) write(buildPacket({ ...spec, srcPort: 1000 + k }))
          write(first)
        }
      }
    }
    writer.flush()
    await writer.close()
    const single = await run(file, { chunkFrames: 1 << 20 })
    const split = await run(file, { chunkFrames: 97, workers: 2 })
    expect(single.code).toBe(0)
    expect(split.code).toBe(0)
    expect(single.lines).toHaveLength(frames)
    const reasons = new Set(single.lines.map((l) => l.reason))
    expect([...reasons].sort()).toEqual(['default', 'flow', 'fragment-expired', 'rule'])
    expect(split.raw).toBe(single.raw)
    expect(split.stderr).toBe(single.stderr)
  })

  it('reports a bad port name, a bad config and an unreadable capture with exit 1', async () => {
    const badPort = await run(join(fixtures, 'traffic.pcapng'), { port: 'nope' })
    expect(badPort.code).toBe(1)
    expect(badPort.stderr).toBe('no port named "nope" in the config\n')
    const missing = await run(join(scratch, 'absent.pcap'))
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/cannot open .*absent\.pcap: ENOENT/)
    const badConfig = await run(join(fixtures, 'traffic.pcapng'), { config: join(fixtures, 'record.sh') })
    expect(badConfig.code).toBe(1)
    expect(badConfig.stderr).toMatch(/^invalid JSON: unexpected "#" at line 1 column 1\n$/)
  })
})
