// Test app: talks to a kernel server on loopback through stack.net.connect
// (the per-socket kernel fallback) and logs what it got back.
export default async function loopbackClient(stack, context) {
  const port = context.config.settings.port
  const socket = stack.net.connect(port, '127.0.0.1')
  let reply = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk) => (reply += chunk))
  socket.on('end', () => context.log(`reply ${reply}`))
  socket.on('error', (err) => context.log(`error ${err.code}`))
  socket.on('connect', () => socket.end(`hello from ${context.name}`))
}
