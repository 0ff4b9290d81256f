// Child of lifetime.test.ts: a stack on a memory wire; what keeps the process alive.
import { createMemoryWire } from '../../nexus/ports/memory.js'
import { impair } from '../../nexus/middleware/impair.js'
import { createStack } from '../../stacks/sockets/stack.js'

const mode = process.argv[2]
const [wireA, portB] = createMemoryWire()
// 'impair': the same over an impairment wrapper (its pumps must not hold the process either).
const portA = mode === 'impair' ? impair(wireA, { seed: 1, loss: 0.01 }) : wireA
const a = await createStack({ port: portA, addresses: ['198.51.100.1/24'], dad: false })
const b = await createStack({ port: portB, addresses: ['198.51.100.2/24'], dad: false })
if (mode === 'listening' || mode === 'unref') {
  const server = a.net.createServer((socket) => socket.end('hi'))
  server.listen(7000)
  // One exchange, so the stacks have really run.
  const client = b.net.connect({ host: '198.51.100.1', port: 7000 })
  client.on('data', () => {})
  client.on('close', () => {
    if (mode === 'unref') server.unref()
    process.stdout.write('ready\n')
  })
} else if (mode === 'udp' || mode === 'udp-unref') {
  const socket = a.dgram.createSocket('udp4')
  socket.bind(5000, () => {
    if (mode === 'udp-unref') socket.unref()
    process.stdout.write('ready\n')
  })
} else if (mode === 'destroy') {
  // Written, then destroyed at once: the data and the FIN still reach the peer before the process ends.
  let got = 0
  const server = a.net.createServer((socket) => {
    socket.on('data', (chunk: Buffer) => (got += chunk.length))
    socket.on('end', () => process.stdout.write(`got ${got}\n`))
  })
  server.listen(7001)
  server.unref()
  const client = b.net.connect({ host: '198.51.100.1', port: 7001 })
  client.on('connect', () => {
    client.write(Buffer.alloc(200_000, 7)) // within the TCP send buffer (256 KiB): all of it is handed to TCP at once
    client.destroy()
    process.stdout.write('ready\n')
  })
} else {
  process.stdout.write('ready\n')
}
