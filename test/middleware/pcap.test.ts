import { execFileSync } from 'node:child_process'
import { closeSync, createWriteStream, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import {
  CaptureFormatError,
  CaptureReader,
  FileCaptureSource,
  FileCaptureSink,
  LINKTYPE_ETHERNET,
  LINKTYPE_RAW,
  MemoryCaptureSink,
  PCAPNG_BLOCK_DSB,
  PCAPNG_BLOCK_ISB,
  PCAPNG_BLOCK_NRB,
  PCAPNG_BLOCK_SPB,
  PcapngWriter,
  PcapWriter,
  readAllPackets,
  StreamCaptureSink,
  type ByteOrder,
  type PacketDirection,
} from '../../nexus/middleware/pcap.js'

const FIXTURES = new URL('../fixtures/captures/', import.meta.url).pathname
const work = mkdtempSync(join(tmpdir(), 'fs-pcap-test-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

function tool(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}
function capinfosCount(file: string): number {
  const m = /Number of packets:\s+(\d+)/.exec(tool('capinfos', ['-c', file]))
  if (m === null) throw new Error(`capinfos gave no packet count for ${file}`)
  return Number(m[1])
}
/** tshark's expert summary lines of severity Error or Warning, minus TCP sequence analysis of the traffic itself. */
function expertProblems(file: string): string[] {
  const out = tool('tshark', ['-r', file, '-q', '-z', 'expert'])
  const problems: string[] = []
  let section = ''
  for (const line of out.split('\n')) {
    const header = /^(Errors|Warns|Notes|Chats) \(\d+\)/.exec(line)
    if (header) section = header[1]
    else if ((section === 'Errors' || section === 'Warns') && /^\s+\d+\s+\S+/.test(line)) problems.push(line.trim())
  }
  return problems
}

function arpFrame(seq: number): Uint8Array {
  // Ethernet broadcast + ARP request "who has 198.51.100.<seq>? tell 198.51.100.1".
  const f = Buffer.from('ffffffffffff020000000001' + '0806' + '0001080006040001' + '020000000001c6336401' + '000000000000c6336400', 'hex')
  f[41] = seq & 0xff
  return new Uint8Array(f)
}

describe('classic pcap', () => {
  for (const byteOrder of ['le', 'be'] as ByteOrder[]) {
    for (const nanosecond of [false, true]) {
      it(`round-trips (${byteOrder}, ${nanosecond ? 'nanosecond' : 'microsecond'} magic)`, () => {
        const sink = new MemoryCaptureSink()
        const w = new PcapWriter(sink, { linkType: LINKTYPE_ETHERNET, byteOrder, nanosecond, snaplen: 40 })
        w.writePacket(arpFrame(1), 1_700_000_000, 123_456_789)
        w.writePacket(arpFrame(2).subarray(0, 30), 4_000_000_000, 999_999_999)
        w.flush()
        const packets = readAllPackets(sink.bytes())
        expect(packets).toHaveLength(2)
        expect(packets[0].seconds).toBe(1_700_000_000)
        expect(packets[0].nanoseconds).toBe(nanosecond ? 123_456_789 : 123_456_000)
        // Longer than the snaplen: cut, with the original length kept.
        expect(packets[0].data).toEqual(arpFrame(1).subarray(0, 40))
        expect(packets[0].originalLength).toBe(42)
        expect(packets[1].seconds).toBe(4_000_000_000)
        expect(packets[1].data).toEqual(arpFrame(2).subarray(0, 30))
        const reader = CaptureReader.fromBuffer(sink.bytes())
        reader.open()
        expect(reader.format).toBe('pcap')
        expect(reader.byteOrder).toBe(byteOrder)
        expect(reader.nanosecondTimestamps).toBe(nanosecond)
        expect(reader.interfaces[0].snaplen).toBe(40)
      })
    }
  }

  it('is read by tshark with the timestamps and link type we wrote', () => {
    const file = join(work, 'ours-be-nano.pcap')
    const w = new PcapWriter(new FileCaptureSink(file), { linkType: LINKTYPE_RAW, byteOrder: 'be', nanosecond: true })
    const ip = Buffer.from('450000280001000040110000c6336401c6336402a0009c4100140000', 'hex')
    const udp = Buffer.concat([ip, Buffer.from('6869686968696869', 'hex')])
    udp.writeUInt16BE(udp.length, 2)
    w.writePacket(udp, 1_700_000_000, 5)
    w.flush()
    const out = tool('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.time_epoch', '-e', 'ip.src', '-e', 'udp.dstport'])
    expect(out.trim()).toBe('1700000000.000000005\t198.51.100.1\t40001')
  })
})

describe('pcapng', () => {
  for (const byteOrder of ['le', 'be'] as ByteOrder[]) {
    it(`round-trips interfaces, names, resolutions and directions (${byteOrder})`, () => {
      const sink = new MemoryCaptureSink()
      const w = new PcapngWriter(sink, { byteOrder, application: 'flowstack test' })
      const eth = w.addInterface({ linkType: LINKTYPE_ETHERNET, name: 'veth0' })
      const raw = w.addInterface({ linkType: LINKTYPE_RAW, name: 'tun0', timestampDecimals: 6, snaplen: 0 })
      const directions: PacketDirection[] = ['inbound', 'outbound', 'unknown']
      for (let i = 0; i < 30; i++) {
        const frame = arpFrame(i).subarray(0, 40 + (i % 3)) // odd lengths exercise padding
        w.writePacket(i % 2 === 0 ? eth : raw, frame, 1_700_000_000 + i, 123_456_789 + i, directions[i % 3])
      }
      w.flush()
      const reader = CaptureReader.fromBuffer(sink.bytes())
      const seen = []
      for (let p = reader.next(); p !== null; p = reader.next()) seen.push({ ...p, data: p.data.slice() })
      expect(reader.format).toBe('pcapng')
      expect(reader.byteOrder).toBe(byteOrder)
      expect(reader.application).toBe('flowstack test')
      expect(reader.interfaces.map((i) => [i.name, i.linkType, i.unitsPerSecond])).toEqual([
        ['veth0', LINKTYPE_ETHERNET, 1e9],
        ['tun0', LINKTYPE_RAW, 1e6],
      ])
      expect(seen).toHaveLength(30)
      seen.forEach((p, i) => {
        expect(p.index).toBe(i + 1)
        expect(p.interfaceId).toBe(i % 2)
        expect(p.direction).toBe(directions[i % 3])
        expect(p.seconds).toBe(1_700_000_000 + i)
        // Microsecond interface: the nanoseconds are truncated to microseconds.
        expect(p.nanoseconds).toBe(i % 2 === 0 ? 123_456_789 + i : 123_456_000)
        expect(p.data).toEqual(arpFrame(i).subarray(0, 40 + (i % 3)))
      })
    })
  }

  it('tshark reads what we write: no expert warnings, fields and count agree', () => {
    const file = join(work, 'ours.pcapng')
    const w = new PcapngWriter(new FileCaptureSink(file), { byteOrder: 'be', application: 'flowstack' })
    const iface = w.addInterface({ linkType: LINKTYPE_ETHERNET, name: 'port0' })
    for (let i = 0; i < 25; i++) w.writePacket(iface, arpFrame(i), 1_700_000_000, i * 1000, i % 2 ? 'inbound' : 'outbound')
    w.flush()
    expect(capinfosCount(file)).toBe(25)
    expect(expertProblems(file)).toEqual([])
    const lines = tool('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.number', '-e', 'frame.p2p_dir', '-e', 'frame.interface_name', '-e', 'frame.time_epoch', '-e', 'arp.dst.proto_ipv4', '-e', '_ws.malformed'])
      .split('\n')
      .filter((line) => line !== '')
    expect(lines).toHaveLength(25)
    lines.forEach((line, i) => {
      // frame.p2p_dir: 0 = sent (outbound), 1 = received (inbound).
      const ns = String(i * 1000).padStart(9, '0')
      expect(line).toBe(`${i + 1}\t${i % 2 ? 1 : 0}\tport0\t1700000000.${ns}\t198.51.100.${i}\t`)
    })
  })

  it('rewriting real traffic through our writer adds no tshark warnings and keeps every packet', () => {
    const original = join(FIXTURES, 'traffic.pcapng')
    const packets = readAllPackets(readFileSync(original))
    expect(packets.length).toBe(capinfosCount(original))
    for (const byteOrder of ['le', 'be'] as ByteOrder[]) {
      const file = join(work, `rewritten-${byteOrder}.pcapng`)
      const w = new PcapngWriter(new FileCaptureSink(file), { byteOrder })
      const iface = w.addInterface({ linkType: LINKTYPE_ETHERNET, name: 'veth-a' })
      for (const p of packets) w.writePacket(iface, p.data, p.seconds, p.nanoseconds, 'inbound', p.originalLength)
      w.flush()
      expect(capinfosCount(file)).toBe(packets.length)
      expect(expertProblems(file)).toEqual(expertProblems(original))
      const times = (f: string): string => tool('tshark', ['-r', f, '-T', 'fields', '-e', 'frame.time_epoch', '-e', 'frame.len', '-e', 'frame.cap_len'])
      expect(times(file)).toBe(times(original))
    }
  })
})

describe('decryption secrets', () => {
  it('writes a TLS key log as a Decryption Secrets Block that capinfos counts and readers skip', () => {
    const file = join(work, 'secrets.pcapng')
    const w = new PcapngWriter(new FileCaptureSink(file))
    const iface = w.addInterface({ linkType: LINKTYPE_ETHERNET })
    w.writeTlsKeyLog(`CLIENT_RANDOM ${'01'.repeat(32)} ${'ab'.repeat(48)}\n`)
    w.writePacket(iface, arpFrame(1), 1, 0)
    w.flush()
    expect(tool('capinfos', [file])).toMatch(/Number of decryption secrets in file: 1/)
    expect(expertProblems(file)).toEqual([])
    const reader = CaptureReader.fromBuffer(readFileSync(file))
    expect(reader.next()?.data).toEqual(arpFrame(1))
    expect(reader.next()).toBeNull()
    expect(reader.skippedBlocks.get(PCAPNG_BLOCK_DSB)).toBe(1)
  })
})

describe('sinks', () => {
  it('streams to a Node Writable and to a caller-owned file descriptor', async () => {
    const viaStream = join(work, 'stream.pcapng')
    const streamWriter = new PcapngWriter(new StreamCaptureSink(createWriteStream(viaStream)))
    const viaFd = join(work, 'fd.pcap')
    const fd = openSync(viaFd, 'w')
    const fdWriter = new PcapWriter(new FileCaptureSink(fd), { linkType: LINKTYPE_ETHERNET })
    const iface = streamWriter.addInterface({ linkType: LINKTYPE_ETHERNET })
    // Enough data to pass through the 64 KiB staging buffer several times, plus one packet larger than it.
    const big = new Uint8Array(100_000).fill(7)
    for (let i = 0; i < 3000; i++) {
      streamWriter.writePacket(iface, arpFrame(i), 1, i)
      fdWriter.writePacket(arpFrame(i), 1, i * 1000)
    }
    streamWriter.writePacket(iface, big, 2, 0)
    fdWriter.writePacket(big, 2, 0)
    await streamWriter.close()
    await fdWriter.close()
    closeSync(fd) // the writer does not close a descriptor it was given
    for (const file of [viaStream, viaFd]) {
      const packets = readAllPackets(readFileSync(file))
      expect(packets).toHaveLength(3001)
      expect(packets[2999].data).toEqual(arpFrame(2999))
      expect(packets[3000].data).toEqual(big)
      expect(capinfosCount(file)).toBe(3001)
    }
    expect(() => fdWriter.writePacket(arpFrame(1), 1, 0)).toThrow(expect.objectContaining({ code: 'PCAP_CLOSED' }))
  })
})

describe('reading files written by other tools', () => {
  const original = readAllPackets(readFileSync(join(FIXTURES, 'traffic.pcapng')))

  it('reads dumpcap pcapng and tcpdump nanosecond pcap with capinfos counts', () => {
    for (const name of ['traffic.pcapng', 'traffic-tcpdump.pcap']) {
      const file = join(FIXTURES, name)
      const packets = readAllPackets(readFileSync(file))
      expect(packets.length).toBe(capinfosCount(file))
      expect(packets.every((p) => p.linkType === LINKTYPE_ETHERNET)).toBe(true)
    }
  })

  it('reads editcap conversions (-F pcap, -F pcapng, -F nsecpcap) with identical packets and times', () => {
    for (const format of ['pcap', 'nsecpcap', 'pcapng']) {
      const file = join(work, `editcap.${format}`)
      tool('editcap', ['-F', format, join(FIXTURES, 'traffic.pcapng'), file])
      const converted = readAllPackets(readFileSync(file))
      expect(converted.length).toBe(original.length)
      converted.forEach((p, i) => {
        expect(p.data).toEqual(original[i].data)
        expect(p.seconds).toBe(original[i].seconds)
        const expectedNs = format === 'pcap' ? Math.floor(original[i].nanoseconds / 1000) * 1000 : original[i].nanoseconds
        expect(p.nanoseconds).toBe(expectedNs)
      })
    }
  })

  it('reads a file through a small sliding window exactly as from memory', () => {
    const reader = new CaptureReader(new FileCaptureSource(join(FIXTURES, 'traffic.pcapng'), 256))
    let i = 0
    for (let p = reader.next(); p !== null; p = reader.next(), i++) {
      expect(p.data).toEqual(original[i].data)
    }
    reader.close()
    expect(i).toBe(original.length)
  })
})

// Hand-built pcapng blocks for the cases our writer never produces.
function block(type: number, body: Uint8Array, le = true): Buffer {
  const total = 12 + body.length
  const b = Buffer.alloc(total)
  const w32 = (v: number, at: number) => (le ? b.writeUInt32LE(v, at) : b.writeUInt32BE(v, at))
  w32(type, 0)
  w32(total, 4)
  b.set(body, 8)
  w32(total, total - 4)
  return b
}
function shb(): Buffer {
  const body = Buffer.alloc(16)
  body.writeUInt32LE(0x1a2b3c4d, 0)
  body.writeUInt16LE(1, 4)
  body.writeInt32LE(-1, 8)
  body.writeInt32LE(-1, 12)
  return block(0x0a0d0d0a, body)
}
function idb(linkType: number, snaplen: number, tsresol?: number): Buffer {
  const body = Buffer.alloc(tsresol === undefined ? 8 : 20)
  body.writeUInt16LE(linkType, 0)
  body.writeUInt32LE(snaplen, 4)
  if (tsresol !== undefined) {
    body.writeUInt16LE(9, 8)
    body.writeUInt16LE(1, 10)
    body[12] = tsresol
  }
  return block(1, body)
}

describe('pcapng blocks from other writers', () => {
  it('reads Simple Packet Blocks and skips NRB, ISB, DSB and unknown blocks', () => {
    const frame = arpFrame(7)
    const spbBody = Buffer.alloc(4 + 44)
    spbBody.writeUInt32LE(frame.length, 0)
    spbBody.set(frame, 4)
    const file = Buffer.concat([
      shb(),
      idb(LINKTYPE_ETHERNET, 0),
      block(PCAPNG_BLOCK_NRB, Buffer.alloc(4)),
      block(PCAPNG_BLOCK_SPB, spbBody),
      block(PCAPNG_BLOCK_ISB, Buffer.alloc(12)),
      block(PCAPNG_BLOCK_DSB, Buffer.alloc(8)),
      block(0x0bad, Buffer.alloc(20)),
    ])
    const reader = CaptureReader.fromBuffer(file)
    const p = reader.next()
    expect(p?.data).toEqual(frame)
    expect(p?.originalLength).toBe(42)
    expect(reader.next()).toBeNull()
    expect([...reader.skippedBlocks.entries()].sort((a, b) => a[0] - b[0])).toEqual([
      [PCAPNG_BLOCK_NRB, 1],
      [PCAPNG_BLOCK_ISB, 1],
      [PCAPNG_BLOCK_DSB, 1],
      [0x0bad, 1],
    ])
  })

  it('honours a binary if_tsresol (2^-n) and a second section in the other byte order', () => {
    const epb = Buffer.alloc(20 + 44)
    epb.writeUInt32LE(0, 0)
    // 2^-20 units: 3.5 s = 3.5 * 2^20 units
    epb.writeUInt32LE(0, 4)
    epb.writeUInt32LE(3.5 * 2 ** 20, 8)
    epb.writeUInt32LE(42, 12)
    epb.writeUInt32LE(42, 16)
    epb.set(arpFrame(1), 20)
    const second = new MemoryCaptureSink()
    const w = new PcapngWriter(second, { byteOrder: 'be' })
    w.writePacket(w.addInterface({ linkType: LINKTYPE_RAW }), arpFrame(2), 10, 20)
    w.flush()
    const file = Buffer.concat([shb(), idb(LINKTYPE_ETHERNET, 0, 0x80 | 20), block(6, epb), second.bytes()])
    const packets = readAllPackets(file)
    expect(packets.map((p) => [p.seconds, p.nanoseconds, p.linkType])).toEqual([
      [3, 500_000_000, LINKTYPE_ETHERNET],
      [10, 20, LINKTYPE_RAW],
    ])
  })
})

describe('malformed captures', () => {
  const valid = (() => {
    const sink = new MemoryCaptureSink()
    const w = new PcapngWriter(sink, { application: 'x' })
    const i = w.addInterface({ linkType: LINKTYPE_ETHERNET, name: 'a' })
    for (let k = 0; k < 4; k++) w.writePacket(i, arpFrame(k), 1, k, 'inbound')
    w.flush()
    const pcapSink = new MemoryCaptureSink()
    const pw = new PcapWriter(pcapSink, { linkType: LINKTYPE_ETHERNET })
    for (let k = 0; k < 4; k++) pw.writePacket(arpFrame(k), 1, k)
    pw.flush()
    return { pcapng: sink.bytes(), pcap: pcapSink.bytes() }
  })()

  function readOrError(bytes: Uint8Array): { count: number; error: CaptureFormatError | undefined } {
    let count = 0
    try {
      const reader = CaptureReader.fromBuffer(bytes)
      while (reader.next() !== null) count++
      return { count, error: undefined }
    } catch (err) {
      if (!(err instanceof CaptureFormatError)) throw err
      return { count, error: err }
    }
  }

  it('names the offset: bad magic, truncated record, lying block length', () => {
    expect(readOrError(Buffer.from('not a capture file')).error).toMatchObject({ code: 'PCAP_MALFORMED', reason: 'bad-magic', offset: 0 })
    const cut = readOrError(valid.pcap.subarray(0, valid.pcap.length - 5))
    expect(cut.count).toBe(3)
    expect(cut.error).toMatchObject({ reason: 'truncated', offset: 24 + 3 * (16 + 42) })
    expect(cut.error?.message).toContain(`byte offset ${24 + 3 * (16 + 42)}`)
    const lying = Buffer.from(valid.pcapng)
    const shbLength = lying.readUInt32LE(4)
    lying.writeUInt32LE(13, shbLength + 4) // the IDB's length: not a multiple of 4
    expect(readOrError(lying).error).toMatchObject({ reason: 'bad-length', offset: shbLength + 4 })
  })

  it('every truncation of valid files reads the whole packets before the cut, then fails with an offset', () => {
    for (const bytes of [valid.pcap, valid.pcapng]) {
      const full = readOrError(bytes)
      expect(full).toEqual({ count: 4, error: undefined })
      for (let n = 0; n < bytes.length; n++) {
        const r = readOrError(bytes.subarray(0, n))
        if (r.error !== undefined) {
          expect(r.error.offset).toBeGreaterThanOrEqual(0)
          expect(r.error.offset).toBeLessThanOrEqual(n)
        }
        expect(r.count).toBeLessThanOrEqual(4)
      }
    }
  })

  it('random corruption never throws anything but CaptureFormatError (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(valid.pcap, valid.pcapng),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        (bytes, flips) => {
          const copy = Buffer.from(bytes)
          for (const [at, value] of flips) copy[at % copy.length] = value
          readOrError(copy) // throws only if the error is not a CaptureFormatError
        },
      ),
      { numRuns: 2000 },
    )
  })

  it('the file reader reports truncation too', () => {
    const file = join(work, 'cut.pcapng')
    writeFileSync(file, valid.pcapng.subarray(0, valid.pcapng.length - 3))
    const reader = CaptureReader.fromFile(file)
    expect(() => {
      while (reader.next() !== null);
    }).toThrow(CaptureFormatError)
    reader.close()
  })
})
