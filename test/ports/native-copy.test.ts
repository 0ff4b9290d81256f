// copyPacket: the relay/bridge copy between two channels' buffers, through the
// addon's memcpy for large packets and V8's copy for small ones.
import { describe, expect, it } from 'vitest'
import { copyPacket, loadNative } from '../../nexus/ports/native.js'

function sharedView(size: number, offset: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(size + offset + 64), offset, size)
}

describe('copyPacket', () => {
  it('copies exactly length bytes, large and small, and leaves the rest of the destination alone', () => {
    const native = loadNative()
    expect(typeof native.copyBytes).toBe('function')
    for (const length of [0, 1, 60, 2047, 2048, 9000, 65536 + 12]) {
      const src = sharedView(65536 + 12, 8)
      const dst = sharedView(65536 + 12, 24)
      for (let i = 0; i < src.length; i++) src[i] = (i * 31 + 7) & 0xff
      dst.fill(0xee)
      copyPacket(dst, src, length)
      expect(Buffer.from(dst.subarray(0, length)).equals(Buffer.from(src.subarray(0, length)))).toBe(true)
      expect(dst.subarray(length).every((b) => b === 0xee)).toBe(true)
      // The bytes around the views in their SharedArrayBuffers are untouched too.
      expect(new Uint8Array(dst.buffer, 0, 24).every((b) => b === 0)).toBe(true)
    }
  })

  it('the addon refuses a length beyond either view and non-Uint8Array arguments', () => {
    const copyBytes = loadNative().copyBytes!
    const small = sharedView(100, 0)
    const big = sharedView(4096, 0)
    expect(() => copyBytes(small, big, 4096)).toThrow(RangeError)
    expect(() => copyBytes(big, small, 4096)).toThrow(RangeError)
    expect(() => copyBytes(new Uint16Array(4096) as unknown as Uint8Array, big, 10)).toThrow(TypeError)
    expect(() => copyBytes(big, {} as Uint8Array, 10)).toThrow(TypeError)
  })
})
