// The IPv6 extension-header walk (RFC 8200 4): chain order, fragment
// handling, the unrecognized-option action bits, and its bounds.
import { describe, expect, it } from 'vitest'
import {
  emitIpv6,
  emitIpv6FragmentHeader,
  IP_PROTOCOL_TCP,
  IP_PROTOCOL_UDP,
  IPV6_EXT_AH,
  IPV6_EXT_DESTINATION_OPTIONS,
  IPV6_EXT_FRAGMENT,
  IPV6_EXT_HOP_BY_HOP,
  IPV6_EXT_ROUTING,
  IPV6_MAX_EXTENSION_HEADERS,
  IPV6_NO_NEXT_HEADER,
  Ipv6View,
  parseIpv6,
  parseIpv6Address,
  WireError,
  type Ipv6Repr,
} from '../../stacks/wire/index.js'

/** An IPv6 packet whose payload is `extensions` (already chained) followed by `upper` bytes of data. */
function packet(firstNext: number, extensions: number[][], upper = 8): Uint8Array {
  const body = extensions.flat()
  const bytes = new Uint8Array(40 + body.length + upper)
  emitIpv6({ src: parseIpv6Address('2001:db8::1')!, dst: parseIpv6Address('2001:db8::2')!, nextHeader: firstNext, hopLimit: 64, payloadLength: body.length + upper, flowLabel: 0, trafficClass: 0 }, bytes, 0)
  bytes.set(body, 40)
  return bytes
}

function parsed(bytes: Uint8Array): Ipv6Repr {
  const r = parseIpv6(bytes)
  if (r instanceof WireError) throw new Error(r.toString())
  return r
}

function reason(bytes: Uint8Array): string {
  const r = parseIpv6(bytes)
  return r instanceof WireError ? r.reason : 'parsed'
}

describe('IPv6 extension headers', () => {
  it('walks hop-by-hop, destination options, routing, fragment, then the upper layer', () => {
    const fragment = new Uint8Array(8)
    emitIpv6FragmentHeader({ offset: 0, moreFragments: true, id: 0xdeadbeef }, IP_PROTOCOL_UDP, fragment)
    const bytes = packet(IPV6_EXT_HOP_BY_HOP, [
      [IPV6_EXT_DESTINATION_OPTIONS, 0, 5, 2, 0, 0, 1, 0], // router alert (type 5), then PadN
      [IPV6_EXT_ROUTING, 0, 1, 4, 0, 0, 0, 0],
      [IPV6_EXT_FRAGMENT, 0, 4, 3, 0, 0, 0, 0], // routing type 4, segments left 3
      [...fragment],
    ])
    const r = parsed(bytes)
    expect(r.extensions).toEqual([IPV6_EXT_HOP_BY_HOP, IPV6_EXT_DESTINATION_OPTIONS, IPV6_EXT_ROUTING, IPV6_EXT_FRAGMENT])
    expect(r.routing).toEqual({ type: 4, segmentsLeft: 3, offset: 40 + 16 })
    expect(r.fragment).toEqual({ offset: 0, moreFragments: true, id: 0xdeadbeef })
    expect([r.upperProtocol, r.upperOffset, r.upperLength]).toEqual([IP_PROTOCOL_UDP, 40 + 32, 8])
    expect(r.unrecognizedOption).toBeUndefined()
    const view = new Ipv6View()
    expect(view.reset(bytes)).toBe(true)
    expect([view.upperProtocol, view.upperOffset, view.fragmentOffset, view.moreFragments, view.fragmentId]).toEqual([IP_PROTOCOL_UDP, 72, 0, true, 0xdeadbeef])
  })

  it('stops at a non-first fragment: its data is not a header', () => {
    const fragment = new Uint8Array(8)
    emitIpv6FragmentHeader({ offset: 1448, moreFragments: false, id: 7 }, IPV6_EXT_DESTINATION_OPTIONS, fragment)
    // The "destination options" bytes after it are fragment data and would be malformed as a header.
    const r = parsed(packet(IPV6_EXT_FRAGMENT, [[...fragment], [0xff, 0xff, 0xff, 0xff]], 4))
    expect(r.extensions).toEqual([IPV6_EXT_FRAGMENT])
    expect([r.upperProtocol, r.upperOffset, r.upperLength]).toEqual([IPV6_EXT_DESTINATION_OPTIONS, 48, 8])
  })

  it('reports the first unrecognized option whose action is not "skip" (RFC 8200 4.2)', () => {
    // 0x1e: action 00 (skip), 0x7e: 01 (discard), 0xc7: 11 (discard + ICMP unless multicast).
    const skip = parsed(packet(IPV6_EXT_HOP_BY_HOP, [[IP_PROTOCOL_TCP, 0, 0x1e, 4, 0, 0, 0, 0]]))
    expect(skip.unrecognizedOption).toBeUndefined()
    const discard = parsed(packet(IPV6_EXT_HOP_BY_HOP, [[IP_PROTOCOL_TCP, 0, 0x1e, 0, 0x7e, 2, 0, 0]]))
    expect(discard.unrecognizedOption).toEqual({ type: 0x7e, action: 1, pointer: 44 })
    const icmp = parsed(packet(IPV6_EXT_DESTINATION_OPTIONS, [[IP_PROTOCOL_TCP, 0, 0, 0, 0xc7, 2, 0, 0]]))
    expect(icmp.unrecognizedOption).toEqual({ type: 0xc7, action: 3, pointer: 44 })
  })

  it('skips AH by its own length unit (RFC 4302: 4-octet units minus 2)', () => {
    const ah = [IP_PROTOCOL_TCP, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] // length 4 -> 24 bytes
    const r = parsed(packet(IPV6_EXT_AH, [ah], 20))
    expect([r.upperProtocol, r.upperOffset]).toEqual([IP_PROTOCOL_TCP, 64])
  })

  it('refuses what RFC 8200 forbids or what does not fit', () => {
    expect(reason(packet(IPV6_EXT_DESTINATION_OPTIONS, [[IPV6_EXT_HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0], [IP_PROTOCOL_TCP, 0, 1, 4, 0, 0, 0, 0]]))).toBe('malformed')
    const frag = [IPV6_EXT_FRAGMENT, 0, 0, 1, 0, 0, 0, 1]
    expect(reason(packet(IPV6_EXT_FRAGMENT, [frag, [IP_PROTOCOL_UDP, 0, 0, 1, 0, 0, 0, 1]]))).toBe('malformed')
    // Destination options claiming 16 bytes with only 8 present.
    expect(reason(packet(IPV6_EXT_DESTINATION_OPTIONS, [[IP_PROTOCOL_TCP, 1, 1, 4, 0, 0, 0, 0]], 0))).toBe('option-overrun')
    // An option running past its header.
    expect(reason(packet(IPV6_EXT_DESTINATION_OPTIONS, [[IP_PROTOCOL_TCP, 0, 1, 9, 0, 0, 0, 0]]))).toBe('option-overrun')
    // More extension headers than the walk allows.
    const many = Array.from({ length: IPV6_MAX_EXTENSION_HEADERS + 1 }, () => [IPV6_EXT_DESTINATION_OPTIONS, 0, 1, 4, 0, 0, 0, 0])
    many[many.length - 1][0] = IPV6_NO_NEXT_HEADER
    expect(reason(packet(IPV6_EXT_DESTINATION_OPTIONS, many))).toBe('malformed')
    expect(new Ipv6View().reset(packet(IPV6_EXT_DESTINATION_OPTIONS, many))).toBe(false)
    // Payload length beyond the bytes, and a jumbogram.
    const short = packet(IP_PROTOCOL_TCP, [], 8)
    expect(reason(short.subarray(0, 44))).toBe('truncated')
    const jumbo = packet(IPV6_EXT_HOP_BY_HOP, [[IP_PROTOCOL_TCP, 0, 0xc2, 4, 0, 1, 0, 0]])
    jumbo[4] = 0
    jumbo[5] = 0
    expect(reason(jumbo)).toBe('unsupported')
  })

  it('with allowTruncated, a cut datagram keeps its header fields and clips the upper window', () => {
    const bytes = packet(IP_PROTOCOL_TCP, [], 100)
    const r = parseIpv6(bytes.subarray(0, 60), 0, 60, { allowTruncated: true })
    if (r instanceof WireError) throw new Error(r.toString())
    expect([r.payloadLength, r.upperOffset, r.upperLength]).toEqual([100, 40, 20])
  })
})
