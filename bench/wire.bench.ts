// TCP/IPv4 header parse + emit through the wire layer, next to the least a
// parser can do: hand-written DataView reads of the same fields into one
// reused object and DataView writes of them back. Both skip checksums (those
// are measured by checksum.bench), so the ratio is the cost of the wire
// layer's checked parsing and its Repr objects.
import { emitIpv4, emitTcp, parseIpv4, parseTcp, WireError, type ParseOptions } from '../stacks/wire/index.js'
import type { BenchOptions, BenchResult } from './types.js'

const NO_CHECKSUM: ParseOptions = { checksum: 'ignore', allowTruncated: false }
const PACKETS = 256
const STRIDE = 2048
const TOTAL_LENGTH = 1500
const IP_HEADER = 20
const TCP_HEADER = 32 // with the timestamp option, as Linux sends data segments

/** A Linux-like data segment: IPv4 (DF, TTL 64) + TCP with NOP NOP TS. */
function buildPackets(pool: Uint8Array): void {
  const v = new DataView(pool.buffer)
  for (let p = 0; p < PACKETS; p++) {
    const at = p * STRIDE
    v.setUint8(at, 0x45)
    v.setUint16(at + 2, TOTAL_LENGTH)
    v.setUint16(at + 4, p)
    v.setUint16(at + 6, 0x4000)
    v.setUint8(at + 8, 64)
    v.setUint8(at + 9, 6)
    v.setUint32(at + 12, 0xc6336401)
    v.setUint32(at + 16, 0xc6336402)
    const t = at + IP_HEADER
    v.setUint16(t, 40000)
    v.setUint16(t + 2, 443)
    v.setUint32(t + 4, 1_000_000 + p * 1448)
    v.setUint32(t + 8, 77)
    v.setUint8(t + 12, (TCP_HEADER / 4) << 4)
    v.setUint8(t + 13, 0x18)
    v.setUint16(t + 14, 502)
    v.setUint32(t + 20, 0x0101080a)
    v.setUint32(t + 24, 123456 + p)
    v.setUint32(t + 28, 654321)
  }
}

interface ManualHeaders {
  src: number
  dst: number
  id: number
  ttl: number
  flagsFragment: number
  totalLength: number
  srcPort: number
  dstPort: number
  seq: number
  ack: number
  flags: number
  window: number
  tsval: number
  tsecr: number
}

function manualParse(v: DataView, at: number, out: ManualHeaders): boolean {
  if (v.getUint8(at) !== 0x45 || v.getUint8(at + 9) !== 6) return false
  out.totalLength = v.getUint16(at + 2)
  out.id = v.getUint16(at + 4)
  out.flagsFragment = v.getUint16(at + 6)
  out.ttl = v.getUint8(at + 8)
  out.src = v.getUint32(at + 12)
  out.dst = v.getUint32(at + 16)
  const t = at + IP_HEADER
  out.srcPort = v.getUint16(t)
  out.dstPort = v.getUint16(t + 2)
  out.seq = v.getUint32(t + 4)
  out.ack = v.getUint32(t + 8)
  out.flags = v.getUint8(t + 13)
  out.window = v.getUint16(t + 14)
  out.tsval = v.getUint32(t + 24)
  out.tsecr = v.getUint32(t + 28)
  return true
}

function manualEmit(h: ManualHeaders, v: DataView, at: number): void {
  v.setUint8(at, 0x45)
  v.setUint8(at + 1, 0)
  v.setUint16(at + 2, h.totalLength)
  v.setUint16(at + 4, h.id)
  v.setUint16(at + 6, h.flagsFragment)
  v.setUint8(at + 8, h.ttl)
  v.setUint8(at + 9, 6)
  v.setUint16(at + 10, 0)
  v.setUint32(at + 12, h.src)
  v.setUint32(at + 16, h.dst)
  const t = at + IP_HEADER
  v.setUint16(t, h.srcPort)
  v.setUint16(t + 2, h.dstPort)
  v.setUint32(t + 4, h.seq)
  v.setUint32(t + 8, h.ack)
  v.setUint8(t + 12, (TCP_HEADER / 4) << 4)
  v.setUint8(t + 13, h.flags)
  v.setUint16(t + 14, h.window)
  v.setUint32(t + 16, 0)
  v.setUint32(t + 20, 0x0101080a)
  v.setUint32(t + 24, h.tsval)
  v.setUint32(t + 28, h.tsecr)
}

function timePerPacket(seconds: number, round: () => number): number {
  let sink = 0
  for (let i = 0; i < 200; i++) sink ^= round()
  const start = process.hrtime.bigint()
  const deadline = start + BigInt(Math.round(seconds * 1e9))
  let rounds = 0
  let now = start
  while (now < deadline) {
    for (let i = 0; i < 50; i++) sink ^= round()
    rounds += 50
    now = process.hrtime.bigint()
  }
  if (sink === 0.5) throw new Error('unreachable: keeps the results alive')
  return Number(now - start) / (rounds * PACKETS)
}

export default async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const pool = new Uint8Array(STRIDE * PACKETS)
  buildPackets(pool)
  const out = new Uint8Array(STRIDE)
  const poolView = new DataView(pool.buffer)
  const outView = new DataView(out.buffer)

  const wireRound = (): number => {
    let x = 0
    for (let p = 0; p < PACKETS; p++) {
      const at = p * STRIDE
      const ip = parseIpv4(pool, at, TOTAL_LENGTH, NO_CHECKSUM)
      if (ip instanceof WireError) throw new Error(`benchmark packet does not parse: ${ip}`)
      const tcp = parseTcp(pool, ip.payloadOffset, ip.payloadLength, null, NO_CHECKSUM)
      if (tcp instanceof WireError) throw new Error(`benchmark segment does not parse: ${tcp}`)
      emitIpv4(ip, out, 0)
      x ^= emitTcp(tcp, out, IP_HEADER) ^ tcp.seq
    }
    return x
  }
  const manual: ManualHeaders = { src: 0, dst: 0, id: 0, ttl: 0, flagsFragment: 0, totalLength: 0, srcPort: 0, dstPort: 0, seq: 0, ack: 0, flags: 0, window: 0, tsval: 0, tsecr: 0 }
  const manualRound = (): number => {
    let x = 0
    for (let p = 0; p < PACKETS; p++) {
      if (!manualParse(poolView, p * STRIDE, manual)) throw new Error('benchmark packet does not parse')
      manualEmit(manual, outView, 0)
      x ^= manual.seq
    }
    return x
  }
  // Both must produce the same TCP header bytes (the IPv4 checksum differs: the wire layer fills it).
  wireRound()
  const fromWire = out.slice(IP_HEADER, IP_HEADER + TCP_HEADER)
  fromWire.fill(0, 16, 18)
  manualRound()
  const fromManual = out.slice(IP_HEADER, IP_HEADER + TCP_HEADER)
  if (!fromWire.every((b, i) => b === fromManual[i])) throw new Error('wire and manual emit differ: the benchmark would compare different work')

  const seconds = opts.quick ? 0.3 : 2
  const wireNs = timePerPacket(seconds, wireRound)
  const manualNs = timePerPacket(seconds, manualRound)
  return [
    {
      name: 'TCP/IPv4 header parse + emit (no checksums)',
      value: wireNs,
      unit: 'ns/packet',
      baseline: 'hand-written DataView field reads + writes',
      baselineValue: manualNs,
      higherIsBetter: false,
    },
  ]
}
