// One port namespace: reading the kernel's listeners from /proc/net/tcp{,6}
// (what an instance worker checks when it listens on a shared address).
import { afterAll, describe, expect, it } from 'vitest'
import { createServer, type Server } from 'node:net'
import { KernelPorts, kernelListens, parseProcNetTcp } from '../../runtime/kernel-ports.js'

const TCP4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100A8C0:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100A8C0:0050 0900A8C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: garbage
   4: ZZZZZZZZ:0050 00000000:0000 0A
`
const TCP6 = `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: B80D0120000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000
`

let server: Server | undefined
let ports: KernelPorts | undefined
afterAll(() => {
  server?.close()
  ports?.close()
})

describe('kernel listeners from /proc', () => {
  it('parses LISTEN entries only, skipping malformed lines', () => {
    expect(parseProcNetTcp(TCP4, 4)).toEqual([
      { address: '192.168.0.1', port: 80 },
      { address: '0.0.0.0', port: 22 },
    ])
    expect(parseProcNetTcp(TCP6, 6)).toEqual([
      { address: '::', port: 8080 },
      { address: '2001:db8::1', port: 80 },
    ])
    expect(parseProcNetTcp('', 4)).toEqual([])
  })

  it('sees a kernel listener of this process on loopback, and reserves through the helper', async () => {
    server = createServer()
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', () => resolve()))
    const port = (server.address() as { port: number }).port
    ports = await KernelPorts.start()
    expect(kernelListens(ports.procNet, 4, '127.0.0.1', port)).toBe(true)
    expect(kernelListens(ports.procNet, 4, '127.0.0.2', port)).toBe(false)
    // The kernel has that port: the helper cannot reserve it; a free one it can, and then the kernel shows it.
    expect(await ports.reserve('127.0.0.1', port)).toBe('EADDRINUSE')
    const free = createServer()
    await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', () => resolve()))
    const freePort = (free.address() as { port: number }).port
    await new Promise<void>((resolve) => free.close(() => resolve()))
    expect(await ports.reserve('127.0.0.1', freePort)).toBe('ok')
    expect(kernelListens(ports.procNet, 4, '127.0.0.1', freePort)).toBe(true)
    expect(await ports.release('127.0.0.1', freePort)).toBe('ok')
    expect(kernelListens(ports.procNet, 4, '127.0.0.1', freePort)).toBe(false)
    // A release sent right behind its reserve (a listener opened and closed at once):
    // answered in order, and the port is not left reserved.
    const busy = ports.reserve('127.0.0.1', port) // refused: answers come back in request order
    const reserved = ports.reserve('127.0.0.1', freePort)
    const released = ports.release('127.0.0.1', freePort)
    expect(await Promise.all([busy, reserved, released])).toEqual(['EADDRINUSE', 'ok', 'ok'])
    expect(kernelListens(ports.procNet, 4, '127.0.0.1', freePort)).toBe(false)
  })
})
