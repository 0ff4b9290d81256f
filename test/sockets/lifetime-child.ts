// Child of lifetime.test.ts: a stack on a memory wire; what keeps the process alive.
import { createMemoryWire } from '../../nexus/ports/memory.js'
import { createStack } from '../../stacks/sockets/stack.js'

const mode = process.argv[2]
const [portA, portB] = createMemoryWire()
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
} else {
  process.stdout.write('ready\n')
}
