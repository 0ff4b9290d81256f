// An https server on port 443 of the instance's stack, with the instance's TLS
// identity from its config (stack.https defaults to it). The body names the
// instance and is `settings.bodyBytes` long, so a client can tell which
// instance answered and check the whole body arrived.
export default async function tlsGreeting(stack, context) {
  const settings = context.config.settings ?? {}
  const body = Buffer.alloc(settings.bodyBytes ?? 64, `greetings from ${context.name}\n`)
  const server = stack.https.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.setHeader('x-instance', context.name)
    res.end(body)
  })
  server.on('tlsClientError', () => {})
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(443, resolve)
  })
  context.signal.addEventListener('abort', () => server.close())
}
