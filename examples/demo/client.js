// Demo client instance: requests to the web instance (IPv4 and IPv6) through
// the switch, a few to the "kernel" side of the port (a rule sends port 8080
// there) and one to a blocked network (a rule drops it). Logs progress and,
// at the end, one line `result {json}` the demo command reads.
export default async function client(stack, context) {
  const s = context.config.settings ?? {}
  const requests = s.requests ?? 20
  const concurrency = s.concurrency ?? 4
  const result = { requests: 0, failed: 0, bytes: 0, kernelRequests: 0, kernelBytes: 0, blockedTimedOut: 0, refusedRetries: 0, errors: [] }

  const get = (url, timeoutMs) =>
    new Promise((resolve, reject) => {
      const req = stack.http.get(url, (res) => {
        let bytes = 0
        res.on('data', (chunk) => (bytes += chunk.length))
        res.on('end', () => resolve({ status: res.statusCode, bytes }))
        res.on('error', reject)
      })
      // A timer of our own: req.setTimeout only starts once the socket connects,
      // and a dropped SYN never connects.
      // A request still waiting for its socket reports destroy() only once the
      // socket settles, so the timer rejects by itself.
      const timer = setTimeout(() => {
        const err = Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })
        req.destroy(err)
        reject(err)
      }, timeoutMs)
      req.on('close', () => clearTimeout(timer))
      req.on('error', reject)
    })

  const run = async () => {
    let next = 0
    const worker = async () => {
      while (next < requests) {
        const url = s.web[next % s.web.length]
        next++
        try {
          // The web instance starts in its own worker at the same time as this
          // one: until it listens, its stack refuses connections. Retry those.
          let response
          for (let attempt = 0; ; attempt++) {
            try {
              response = await get(url, 3000)
              break
            } catch (err) {
              if (err.code !== 'ECONNREFUSED' || attempt >= 20) throw err
              result.refusedRetries++
              await new Promise((resolve) => setTimeout(resolve, 50))
            }
          }
          const { status, bytes } = response
          if (status === 200) {
            result.requests++
            result.bytes += bytes
          } else result.failed++
        } catch (err) {
          result.failed++
          if (result.errors.length < 5) result.errors.push(String(err.code ?? err.message))
        }
        if (result.requests > 0 && result.requests % 20 === 0) context.log(`${result.requests}/${requests} requests done`)
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    for (let i = 0; i < 3 && s.kernel; i++) {
      try {
        const { bytes } = await get(s.kernel, 3000)
        result.kernelRequests++
        result.kernelBytes += bytes
      } catch (err) {
        if (result.errors.length < 5) result.errors.push(`kernel: ${err.code ?? err.message}`)
      }
    }
    if (s.blocked) {
      try {
        await get(s.blocked, 300)
      } catch (err) {
        if (err.code === 'ETIMEDOUT') result.blockedTimedOut++
      }
    }
    context.log(`result ${JSON.stringify(result)}`)
  }
  // The app returns at once; the requests run on (the instance keeps running).
  run().catch((err) => context.log(`result ${JSON.stringify({ ...result, fatal: String(err) })}`))
}
