/**
 * The wire layer: zero-copy packet views and parsed Reprs with parse / emit /
 * length for every format flowstack speaks (smoltcp's packet/Repr split).
 *
 * Conventions
 * - Parsers are checked: `parseX(bytes, offset, length, [ip pseudo-header],
 *   options)` returns an `XRepr` or a `WireError` (layer + reason), never
 *   throws, never reads outside `[offset, offset + length)`.
 * - Emitters are unchecked: `emitX(repr, bytes, offset, [ip])` writes the
 *   header and returns its length; size the buffer with `xHeaderLength` /
 *   `xBufferLength`. Transport emitters fill the checksum when given the
 *   pseudo-header (`IpPseudoHeader`; an Ipv4Repr or Ipv6Repr is one) and
 *   expect the payload to be in place already.
 * - Offsets in Reprs (`payloadOffset`, `upperOffset`) are absolute indices
 *   into the parsed bytes; address fields of allocating parsers are
 *   subarray views into the packet (no copies).
 * - `ParseOptions.checksum`: 'verify' (default: mismatch is an error),
 *   'report' (`checksumValid` false), 'ignore' (null; offloaded or cut).
 *   `allowTruncated` accepts captures cut at their snap length.
 * - Hot paths: `XView` classes (re-pointable getters, no allocation) and the
 *   reusing `TcpParser` / `UdpParser` / `Ipv4Parser` / `Ipv6Parser` (one
 *   Repr per parser, valid until its next call).
 * - Checksums: `internetChecksum` (RFC 1071, aligned 32-bit reads),
 *   `checksumUpdate16/32` (RFC 1624 eqn. 3) for patched header templates.
 */
export * from './error.js'
export * from './address.js'
export * from './checksum.js'
export * from './ethernet.js'
export * from './arp.js'
export * from './ipv4.js'
export * from './ipv6.js'
export * from './icmpv4.js'
export * from './icmpv6.js'
export * from './udp.js'
export * from './tcp.js'
export { readU16, readU32, writeU16, writeU32 } from './bytes.js'
