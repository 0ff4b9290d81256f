// emit(parse(x)) is byte-identical for the recorded frames: every header is
// rebuilt from its Repr into a zeroed buffer (only payloads, IPv6 extension
// headers and link padding are copied) and the checksums are recomputed.
import { describe, expect, it } from 'vitest'
import { KERNEL_FRAMES } from '../fixtures/wire/kernel-frames.js'
import { SYNTHETIC_FRAMES } from '../fixtures/wire/synthetic-frames.js'
import {
  emitArp,
  emitEthernet,
  emitIcmpv4,
  emitIcmpv6,
  emitIpv4,
  emitIpv6,
  emitTcp,
  emitUdp,
  ipv4IsFragment,
  TCP_OPTION_END,
  TCP_OPTION_MSS,
  TCP_OPTION_NOP,
  TCP_OPTION_SACK,
  TCP_OPTION_SACK_PERMITTED,
  TCP_OPTION_TIMESTAMP,
  TCP_OPTION_WINDOW_SCALE,
  type IpPseudoHeader,
} from '../../stacks/wire/index.js'
import { dissectFrame, fromHex } from './dissect.js'

const EMITTED_TCP_OPTIONS = new Set([TCP_OPTION_END, TCP_OPTION_NOP, TCP_OPTION_MSS, TCP_OPTION_WINDOW_SCALE, TCP_OPTION_SACK_PERMITTED, TCP_OPTION_SACK, TCP_OPTION_TIMESTAMP])

/** Rebuilds the frame from its Reprs; returns null when it holds something emit deliberately never writes. */
function rebuild(original: Uint8Array): Uint8Array | null {
  const d = dissectFrame(original)
  expect(d.error).toBeUndefined()
  const out = new Uint8Array(original.length)
  const eth = d.ethernet!
  const copy = (from: number, to: number): void => out.set(original.subarray(from, to), from)
  if (d.arp !== undefined) {
    copy(eth.payloadOffset + 28, original.length)
    emitArp(d.arp, out, eth.payloadOffset)
    emitEthernet(eth, out, 0)
    return out
  }
  let ip: IpPseudoHeader
  let transportOffset: number
  let datagramEnd: number
  let fragment: boolean
  if (d.ipv4 !== undefined) {
    // Emit never writes IPv4 options.
    if (d.ipv4.headerLength !== 20) return null
    ip = d.ipv4
    transportOffset = d.ipv4.payloadOffset
    datagramEnd = transportOffset + d.ipv4.payloadLength
    fragment = ipv4IsFragment(d.ipv4)
  } else {
    const v6 = d.ipv6!
    ip = v6
    // Extension headers are carried as payload by emitIpv6.
    copy(v6.payloadOffset, v6.upperOffset)
    transportOffset = v6.upperOffset
    datagramEnd = v6.upperOffset + v6.upperLength
    fragment = v6.fragment !== undefined
  }
  copy(datagramEnd, original.length)
  if (fragment) {
    copy(transportOffset, datagramEnd)
  } else if (d.tcp !== undefined) {
    const kinds = d.tcp.headerLength > 20 ? tcpOptionKinds(original, transportOffset + 20, transportOffset + d.tcp.headerLength) : []
    if (kinds.some((k) => !EMITTED_TCP_OPTIONS.has(k))) return null
    copy(d.tcp.payloadOffset, datagramEnd)
    expect(emitTcp(d.tcp, out, transportOffset, ip)).toBe(d.tcp.headerLength)
  } else if (d.udp !== undefined) {
    copy(d.udp.payloadOffset, datagramEnd)
    emitUdp(d.udp, out, transportOffset, d.udp.checksumValid === null ? null : ip)
  } else if (d.icmpv4 !== undefined) {
    copy(d.icmpv4.payloadOffset, datagramEnd)
    emitIcmpv4(d.icmpv4, out, transportOffset)
  } else if (d.icmpv6 !== undefined) {
    copy(d.icmpv6.payloadOffset, datagramEnd)
    emitIcmpv6(d.icmpv6, out, transportOffset, ip)
  } else {
    copy(transportOffset, datagramEnd)
  }
  if (d.ipv4 !== undefined) emitIpv4(d.ipv4, out, eth.payloadOffset)
  else emitIpv6(d.ipv6!, out, eth.payloadOffset)
  emitEthernet(eth, out, 0)
  return out
}

function tcpOptionKinds(bytes: Uint8Array, start: number, end: number): number[] {
  const kinds: number[] = []
  for (let at = start; at < end; ) {
    const kind = bytes[at]
    kinds.push(kind)
    if (kind === TCP_OPTION_END) break
    at += kind === TCP_OPTION_NOP ? 1 : bytes[at + 1]
  }
  return kinds
}

describe('emit(parse(frame)) is byte-identical', () => {
  let rebuilt = 0
  for (const [set, frames] of [['kernel', KERNEL_FRAMES], ['synthetic', SYNTHETIC_FRAMES]] as const) {
    for (const frame of frames) {
      it(`${set} frame ${frame.frame}: ${frame.tshark['frame.protocols'][0]}`, () => {
        const original = fromHex(frame.hex)
        const out = rebuild(original)
        if (out === null) {
          // Only the two synthetic frames that carry what emit never writes (IPv4 options, an unknown TCP option).
          expect(set).toBe('synthetic')
          return
        }
        rebuilt++
        expect(Buffer.from(out).toString('hex')).toBe(frame.hex)
      })
    }
  }
  it('rebuilt nearly every frame', () => {
    expect(rebuilt).toBe(KERNEL_FRAMES.length + SYNTHETIC_FRAMES.length - 2)
  })
})
