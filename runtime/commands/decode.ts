// `flowstack decode FILE`: one JSON object per packet of a pcap or pcapng
// file, showing what the wire layer understood:
//   {"frame": 1, "length": 74, "layers": [{"layer": "ethernet", ...}, ...]}
// A packet that stops parsing gets {"layer": "error", "reason": "..."} after
// its last good layer, and decoding carries on with the next packet.
// `checksumValid` is null where a checksum cannot be checked (a fragment, or
// a packet cut short by the capture's snap length).
import { once } from 'node:events'
import { CaptureFormatError, CaptureReader, LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW } from '../../nexus/middleware/pcap.js'
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  IP_PROTOCOL_ICMP,
  IP_PROTOCOL_ICMPV6,
  IP_PROTOCOL_TCP,
  IP_PROTOCOL_UDP,
  TCP_FLAG_NAMES,
  WireError,
  WireErrorCounters,
  formatIpv4Address,
  formatIpv6Address,
  formatMac,
  parseArp,
  parseEthernet,
  parseIcmpv4,
  parseIcmpv6,
  parseIpv4,
  parseIpv6,
  parseTcp,
  parseUdp,
  type IpPseudoHeader,
  type ParseOptions,
} from '../../stacks/wire/index.js'

export type DecodedLayer = { layer: string } & Record<string, unknown>

export interface DecodedFrame {
  frame: number
  length: number
  layers: DecodedLayer[]
}

/** What `decodeFrame` needs of a captured packet. */
export interface FrameInput {
  index: number
  linkType: number
  bytes: Uint8Array
  dataOffset: number
  capturedLength: number
  originalLength: number
}

const WHOLE: ParseOptions = { checksum: 'report', allowTruncated: false }
/** A packet cut by the snap length: lengths are clipped and checksums over missing bytes are not checked. */
const CUT_SHORT: ParseOptions = { checksum: 'report', allowTruncated: true }
/** Upper layer of a first fragment: its checksum covers bytes in other fragments. */
const FRAGMENT: ParseOptions = { checksum: 'ignore', allowTruncated: true }

/** Where decodeFrame counts parse failures by layer and reason (set for the duration of one call). */
let activeCounters: WireErrorCounters | undefined

function errorLayer(error: WireError | string): DecodedLayer {
  if (typeof error !== 'string') activeCounters?.count(error)
  return { layer: 'error', reason: typeof error === 'string' ? error : error.toString() }
}

function macText(bytes: Uint8Array): string {
  if (bytes.length === 6) return formatMac(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':')
}

/**
 * Decodes the transport layer at [offset, offset + length) of an IP datagram.
 * `declaredLength` is what the IP header says the upper layer has: payload
 * lengths are shown as sent on the wire, also when the capture cut them short
 * (as tshark does).
 */
function decodeTransport(
  layers: DecodedLayer[],
  bytes: Uint8Array,
  protocol: number,
  offset: number,
  length: number,
  declaredLength: number,
  ip: IpPseudoHeader,
  options: ParseOptions,
): void {
  switch (protocol) {
    case IP_PROTOCOL_TCP: {
      // A cut-short segment is still parsed (its header may be whole), but its checksum is not checkable.
      const tcp = parseTcp(bytes, offset, length, ip, options.allowTruncated === true ? FRAGMENT : options)
      if (tcp instanceof WireError) {
        layers.push(errorLayer(tcp))
        return
      }
      const flags: string[] = []
      for (const [bit, name] of TCP_FLAG_NAMES) if ((tcp.flags & bit) !== 0) flags.push(name)
      const tcpOptions: Record<string, unknown> = {}
      if (tcp.options.mss !== undefined) tcpOptions.mss = tcp.options.mss
      if (tcp.options.windowScale !== undefined) tcpOptions.windowScale = tcp.options.windowScale
      if (tcp.options.sackPermitted === true) tcpOptions.sackPermitted = true
      if (tcp.options.sack !== undefined) tcpOptions.sack = tcp.options.sack
      if (tcp.options.timestamp !== undefined) tcpOptions.timestamp = tcp.options.timestamp
      layers.push({
        layer: 'tcp',
        srcPort: tcp.srcPort,
        dstPort: tcp.dstPort,
        seq: tcp.seq,
        ack: tcp.ack,
        flags,
        window: tcp.window,
        checksumValid: tcp.checksumValid,
        payloadLength: Math.max(tcp.payloadLength, declaredLength - tcp.headerLength),
        options: tcpOptions,
      })
      return
    }
    case IP_PROTOCOL_UDP: {
      const udp = parseUdp(bytes, offset, length, ip, options)
      if (udp instanceof WireError) {
        layers.push(errorLayer(udp))
        return
      }
      layers.push({
        layer: 'udp',
        srcPort: udp.srcPort,
        dstPort: udp.dstPort,
        length: udp.length,
        checksumValid: udp.checksumValid,
        payloadLength: udp.length - 8,
      })
      return
    }
    case IP_PROTOCOL_ICMP: {
      if (ip.version !== 4) return
      const icmp = parseIcmpv4(bytes, offset, length, options.allowTruncated === true ? FRAGMENT : options)
      if (icmp instanceof WireError) {
        layers.push(errorLayer(icmp))
        return
      }
      layers.push({ layer: 'icmpv4', type: icmp.type, code: icmp.code, checksumValid: icmp.checksumValid })
      return
    }
    case IP_PROTOCOL_ICMPV6: {
      if (ip.version !== 6) return
      const icmp = parseIcmpv6(bytes, offset, length, ip, options.allowTruncated === true ? FRAGMENT : options)
      if (icmp instanceof WireError) {
        layers.push(errorLayer(icmp))
        return
      }
      const layer: DecodedLayer = { layer: 'icmpv6', type: icmp.type, code: icmp.code, checksumValid: icmp.checksumValid }
      if (icmp.targetAddress !== undefined) layer.targetAddress = formatIpv6Address(icmp.targetAddress)
      const ndp = icmp.ndpOptions
      if (ndp?.sourceLinkLayerAddress !== undefined) layer.sourceLinkLayerAddress = macText(ndp.sourceLinkLayerAddress)
      if (ndp?.targetLinkLayerAddress !== undefined) layer.targetLinkLayerAddress = macText(ndp.targetLinkLayerAddress)
      layers.push(layer)
      return
    }
    default:
    // Other protocols (IGMP, ESP, ...) are outside the wire layer: nothing more to show.
  }
}

function decodeIpv4(layers: DecodedLayer[], bytes: Uint8Array, offset: number, length: number, options: ParseOptions): void {
  const ip = parseIpv4(bytes, offset, length, options)
  if (ip instanceof WireError) {
    layers.push(errorLayer(ip))
    return
  }
  layers.push({
    layer: 'ipv4',
    src: formatIpv4Address(ip.src),
    dst: formatIpv4Address(ip.dst),
    ttl: ip.ttl,
    protocol: ip.protocol,
    totalLength: ip.totalLength,
    id: ip.id,
    dontFragment: ip.dontFragment,
    moreFragments: ip.moreFragments,
    fragmentOffset: ip.fragmentOffset,
    checksumValid: ip.checksumValid,
  })
  // Only the first fragment starts with the upper-layer header.
  if (ip.fragmentOffset !== 0) return
  const declared = ip.totalLength - ip.headerLength
  decodeTransport(layers, bytes, ip.protocol, ip.payloadOffset, ip.payloadLength, declared, ip, ip.moreFragments ? FRAGMENT : options)
}

function decodeIpv6(layers: DecodedLayer[], bytes: Uint8Array, offset: number, length: number, options: ParseOptions): void {
  const ip = parseIpv6(bytes, offset, length, options)
  if (ip instanceof WireError) {
    layers.push(errorLayer(ip))
    return
  }
  const layer: DecodedLayer = {
    layer: 'ipv6',
    src: formatIpv6Address(ip.src),
    dst: formatIpv6Address(ip.dst),
    hopLimit: ip.hopLimit,
    nextHeader: ip.nextHeader,
    payloadLength: ip.payloadLength,
    flowLabel: ip.flowLabel,
    extensions: ip.extensions,
  }
  if (ip.fragment !== undefined) {
    layer.fragment = { offset: ip.fragment.offset, moreFragments: ip.fragment.moreFragments, id: ip.fragment.id }
  }
  layers.push(layer)
  if (ip.fragment !== undefined && ip.fragment.offset !== 0) return
  const upperOptions = ip.fragment !== undefined && ip.fragment.moreFragments ? FRAGMENT : options
  const declared = ip.payloadLength - (ip.upperOffset - ip.payloadOffset)
  decodeTransport(layers, bytes, ip.upperProtocol, ip.upperOffset, ip.upperLength, declared, ip, upperOptions)
}

function decodeIp(layers: DecodedLayer[], bytes: Uint8Array, offset: number, length: number, options: ParseOptions): void {
  if (length < 1) {
    layers.push(errorLayer('ip: truncated (0 bytes)'))
    return
  }
  const version = bytes[offset] >>> 4
  if (version === 4) decodeIpv4(layers, bytes, offset, length, options)
  else if (version === 6) decodeIpv6(layers, bytes, offset, length, options)
  else layers.push(errorLayer(`ip: bad-version (version ${version})`))
}

/** Decodes one captured packet into layers, counting failures in `counters`. Never throws on packet contents. */
export function decodeFrame(packet: FrameInput, counters?: WireErrorCounters): DecodedFrame {
  activeCounters = counters
  const layers: DecodedLayer[] = []
  const { bytes, dataOffset: offset, capturedLength: length } = packet
  const options = packet.capturedLength < packet.originalLength ? CUT_SHORT : WHOLE
  switch (packet.linkType) {
    case LINKTYPE_ETHERNET: {
      const eth = parseEthernet(bytes, offset, length)
      if (eth instanceof WireError) {
        layers.push(errorLayer(eth))
        break
      }
      const layer: DecodedLayer = {
        layer: 'ethernet',
        src: formatMac(eth.src),
        dst: formatMac(eth.dst),
        ethertype: eth.ethertype,
      }
      if (eth.vlan !== undefined) layer.vlan = eth.vlan.id
      layers.push(layer)
      if (eth.ethertype === ETHERTYPE_ARP) {
        const arp = parseArp(bytes, eth.payloadOffset, eth.payloadLength)
        if (arp instanceof WireError) layers.push(errorLayer(arp))
        else {
          layers.push({
            layer: 'arp',
            operation: arp.operation,
            senderMac: formatMac(arp.senderMac),
            senderIp: formatIpv4Address(arp.senderIp),
            targetMac: formatMac(arp.targetMac),
            targetIp: formatIpv4Address(arp.targetIp),
          })
        }
      } else if (eth.ethertype === ETHERTYPE_IPV4) {
        decodeIpv4(layers, bytes, eth.payloadOffset, eth.payloadLength, options)
      } else if (eth.ethertype === ETHERTYPE_IPV6) {
        decodeIpv6(layers, bytes, eth.payloadOffset, eth.payloadLength, options)
      }
      break
    }
    case LINKTYPE_RAW:
      decodeIp(layers, bytes, offset, length, options)
      break
    case LINKTYPE_IPV4:
      decodeIpv4(layers, bytes, offset, length, options)
      break
    case LINKTYPE_IPV6:
      decodeIpv6(layers, bytes, offset, length, options)
      break
    default:
      layers.push(errorLayer(`link type ${packet.linkType} is not supported (Ethernet 1 and raw IP 101 are)`))
  }
  activeCounters = undefined
  return { frame: packet.index, length: packet.originalLength, layers }
}

/** Lines are gathered into chunks of about this many characters before each stdout write. */
const CHUNK = 64 * 1024

/**
 * Prints every packet of `file` as one JSON line. Exit codes: 0 done, 1 the
 * file is malformed (packets before the fault are printed), 2 it cannot be
 * opened or is not a capture at all.
 */
export async function decodeCommand(
  file: string,
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Promise<number> {
  let reader: CaptureReader
  try {
    reader = CaptureReader.fromFile(file)
    reader.open()
  } catch (e) {
    err.write(`flowstack decode: ${file}: ${(e as Error).message}\n`)
    return 2
  }
  // A reader that goes away (`| head`) ends the output; it is not an error of ours.
  let outputClosed = false
  const onOutputError = (): void => {
    outputClosed = true
  }
  out.on('error', onOutputError)
  let pending = ''
  const flush = async (): Promise<void> => {
    if (pending === '' || outputClosed) return
    const ok = out.write(pending)
    pending = ''
    if (!ok && !outputClosed) {
      try {
        await once(out, 'drain')
      } catch {
        outputClosed = true
      }
    }
  }
  let exitCode = 0
  const counters = new WireErrorCounters()
  try {
    for (let packet = reader.next(); packet !== null && !outputClosed; packet = reader.next()) {
      pending += `${JSON.stringify(decodeFrame(packet, counters))}\n`
      if (pending.length >= CHUNK) await flush()
    }
  } catch (e) {
    if (!(e instanceof CaptureFormatError)) throw e
    exitCode = 1
    await flush()
    err.write(`flowstack decode: ${file}: ${e.message}\n`)
  } finally {
    reader.close()
  }
  await flush()
  out.off('error', onOutputError)
  const failures = counters.snapshot()
  if (Object.keys(failures).length > 0) err.write(`flowstack decode: parse errors by layer and reason: ${JSON.stringify(failures)}\n`)
  return exitCode
}
