// Demo web instance: a node:http server on the instance's own stack.
// Settings: httpPort, bodyBytes; `crashAfter` (n) throws from a request
// handler after n requests, to show supervision (the runtime restarts it).
export default async function web(stack, context) {
  const settings = context.config.settings ?? {}
  const body = Buffer.alloc(settings.bodyBytes ?? 1024, 'flowstack ')
  let served = 0
  const server = stack.http.createServer((req, res) => {
    served++
    if (settings.crashAfter !== undefined && served > settings.crashAfter) {
      // An uncaught error in the instance: the worker dies, the runtime restarts it.
      setImmediate(() => {
        throw new Error(`web: deliberate crash after ${settings.crashAfter} request(s)`)
      })
    }
    res.setHeader('content-type', 'text/plain')
    res.setHeader('x-instance', context.name)
    res.end(body)
  })
  // node:http asks the kernel's net.Server for TCP_NODELAY on each connection;
  // here the connections come from the instance's stack, so ask for it per socket.
  server.on('connection', (socket) => socket.setNoDelay(true))
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(settings.httpPort ?? 80, resolve)
  })
  context.log(`listening on port ${settings.httpPort ?? 80}`)
  context.signal.addEventListener('abort', () => server.close())
}
