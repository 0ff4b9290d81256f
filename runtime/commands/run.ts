// `flowstack run CONFIG`: the runtime in the foreground. SIGINT/SIGTERM drain
// and stop; SIGHUP reloads the rules from the same file. Config problems stop
// it before anything opens, printed exactly as `flowstack check` prints them.
import { ConfigError, formatProblem, loadConfig, type LoadedConfig } from '../config/load.js'
import { defaultControlPath, serveControl } from '../control.js'
import { Runtime } from '../runtime.js'

export interface RunOptions {
  socket?: string
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
  /** Called once the runtime is up and the control socket serves (embedding, tests). */
  onStarted?: (runtime: Runtime) => void
}

export async function runCommand(configPath: string, options: RunOptions = {}): Promise<number> {
  const stdout = options.stdout ?? process.stdout
  const stderr = options.stderr ?? process.stderr
  let loaded: LoadedConfig
  try {
    loaded = await loadConfig(configPath)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    for (const problem of err.problems) stderr.write(`${formatProblem(problem)}\n`)
    return 1
  }
  let runtime: Runtime
  try {
    runtime = await Runtime.start(loaded, {
      log: (source, level, message) => stderr.write(`[${source}] ${level}: ${message}\n`),
    })
  } catch (err) {
    // A port that cannot be opened, a switch worker that could not start: nothing is left open.
    stderr.write(`flowstack: cannot start: ${(err as { code?: string }).code ?? 'ERROR'}: ${(err as Error).message}\n`)
    return 1
  }
  const socketPath = options.socket ?? defaultControlPath(loaded.config)
  let server: Awaited<ReturnType<typeof serveControl>>
  try {
    server = await serveControl(runtime, socketPath, loaded.config.control?.mode ?? 0)
  } catch (err) {
    await runtime.stop()
    stderr.write(`${(err as Error).message}\n`)
    return 1
  }
  stdout.write(`flowstack: ${runtime.instances.length} instance(s), ${loaded.config.ports.length} port(s); control socket ${socketPath}\n`)
  // Signals are handled from here on, even while an instance is still starting (or never does).
  void runtime.whenRunning().then(
    () => stdout.write('flowstack: running\n'),
    // The others carry on; this one's reason was logged when it stopped.
    (err: unknown) => stderr.write(`flowstack: ${(err as Error).message}\n`),
  )

  let failure: string | undefined
  const done = new Promise<void>((resolve) => {
    const unhook = (): void => {
      process.off('SIGINT', onInt)
      process.off('SIGTERM', onTerm)
      process.off('SIGHUP', onHup)
    }
    const stop = (signal: string): void => {
      stdout.write(`flowstack: ${signal}, draining\n`)
      unhook()
      resolve()
    }
    // The runtime stopped by itself (its switch worker died); it logged why.
    void runtime.whenFailed().then((reason) => {
      failure = reason
      unhook()
      resolve()
    })
    const onInt = (): void => stop('SIGINT')
    const onTerm = (): void => stop('SIGTERM')
    const onHup = (): void => {
      runtime.reload().then(
        (r) => stderr.write(r.applied ? `flowstack: reloaded ${r.rules} rule(s)\n` : `flowstack: reload refused\n${r.problems.map((p) => formatProblem(p)).join('\n')}\n`),
        (err: unknown) => stderr.write(`flowstack: reload failed: ${String(err)}\n`),
      )
    }
    process.on('SIGINT', onInt)
    process.on('SIGTERM', onTerm)
    process.on('SIGHUP', onHup)
  })
  options.onStarted?.(runtime)
  await done
  await new Promise<void>((resolve) => server.close(() => resolve()))
  await runtime.stop()
  if (failure !== undefined) {
    stderr.write(`flowstack: stopped: the switch failed: ${failure}\n`)
    return 1
  }
  stdout.write('flowstack: stopped\n')
  return 0
}
