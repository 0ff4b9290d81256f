// Test app on an address shared with the kernel: serves HTTP on
// settings.httpPort, then tries settings.kernelPort (a port the kernel
// already listens on) and logs what listen() said.
export default async function sharedWeb(stack, context) {
  const settings = context.config.settings
  const server = stack.http.createServer((_req, res) => {
    res.setHeader('x-instance', context.name)
    res.end('served by the instance\n')
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(settings.httpPort, resolve)
  })
  const probe = stack.net.createServer()
  const outcome = await new Promise((resolve) => {
    probe.once('error', (err) => resolve(err.code))
    probe.listen(settings.kernelPort, () => resolve('ok'))
  })
  if (outcome === 'ok') probe.close()
  context.log(`listen ${settings.kernelPort}: ${outcome}`)
  context.signal.addEventListener('abort', () => server.close())
}
