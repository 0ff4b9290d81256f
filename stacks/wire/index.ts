/**
 * The wire layer: zero-copy packet views and parsed Reprs with parse / emit /
 * length for every format flowstack speaks. Parsers are checked (malformed
 * input returns a WireError, never throws, never reads out of bounds);
 * emitters are unchecked (the caller sizes the buffer from xHeaderLength /
 * xBufferLength). Offsets in Reprs are absolute indices into the parsed bytes.
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
