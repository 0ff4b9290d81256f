// Internet checksum (RFC 1071) throughput over 1500-byte packets, the wire
// layer's implementation next to the straightforward DataView.getUint16 loop.
import { internetChecksum } from '../stacks/wire/checksum.js'
import type { BenchOptions, BenchResult } from './types.js'

const PACKET = 1500
const PACKETS = 512
/** Packets sit at 2 KiB strides of one buffer, like a channel pool, offset by an Ethernet header. */
const STRIDE = 2048
const IP_OFFSET = 14

function dataViewChecksum(view: DataView, offset: number, length: number): number {
  let sum = 0
  const end = offset + length - 1
  let i = offset
  for (; i < end; i += 2) sum += view.getUint16(i)
  if (i === end) sum += view.getUint8(i) << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

/** Runs `round` over all packets until `seconds` have passed; returns ns per packet. */
function timePerPacket(seconds: number, round: () => number): { nsPerPacket: number; sink: number } {
  let sink = 0
  for (let i = 0; i < 50; i++) sink ^= round() // warm-up: let the JIT settle
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9))
  const start = process.hrtime.bigint()
  let rounds = 0
  let now = start
  while (now < deadline) {
    for (let i = 0; i < 20; i++) sink ^= round()
    rounds += 20
    now = process.hrtime.bigint()
  }
  return { nsPerPacket: Number(now - start) / (rounds * PACKETS), sink }
}

export default async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const pool = new Uint8Array(STRIDE * PACKETS)
  let seed = 0x2545f491
  for (let i = 0; i < pool.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    pool[i] = seed >>> 24
  }
  const view = new DataView(pool.buffer)
  for (let p = 0; p < PACKETS; p++) {
    const at = p * STRIDE + IP_OFFSET
    if (internetChecksum(pool, at, PACKET) !== dataViewChecksum(view, at, PACKET)) {
      throw new Error(`checksum mismatch at packet ${p}: the benchmark would compare different computations`)
    }
  }
  const seconds = opts.quick ? 0.3 : 2
  const ours = timePerPacket(seconds, () => {
    let x = 0
    for (let p = 0; p < PACKETS; p++) x ^= internetChecksum(pool, p * STRIDE + IP_OFFSET, PACKET)
    return x
  })
  const baseline = timePerPacket(seconds, () => {
    let x = 0
    for (let p = 0; p < PACKETS; p++) x ^= dataViewChecksum(view, p * STRIDE + IP_OFFSET, PACKET)
    return x
  })
  if (ours.sink === -1 || baseline.sink === -1) throw new Error('unreachable: keeps the results alive')
  const gbits = (nsPerPacket: number): number => (PACKET * 8) / nsPerPacket
  return [
    {
      name: 'internet checksum, 1500 B packets',
      value: gbits(ours.nsPerPacket),
      unit: 'Gbit/s',
      baseline: 'DataView.getUint16 loop',
      baselineValue: gbits(baseline.nsPerPacket),
      higherIsBetter: true,
    },
  ]
}
