// An https server on the instance's stack, with the instance's TLS identity
// from the config (stack.https defaults to it).
export default async function httpsWeb(stack, context) {
  const server = stack.https.createServer((req, res) => {
    res.setHeader('x-instance', context.name)
    res.end(`secure ${context.name} ${req.socket.alpnProtocol || 'no-alpn'}`)
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(443, resolve)
  })
  context.signal.addEventListener('abort', () => server.close())
}
