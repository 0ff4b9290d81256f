// Starts a worker from a .ts file under vitest. The shared workerEntry()
// helper passes execArgv ['--import', 'tsx'], which Node 20 does not apply to
// a worker's own entry module ("Unknown file extension .ts"), so here a tiny
// eval'd ESM entry registers tsx's loader first and then imports the file.
import { Worker, type WorkerOptions } from 'node:worker_threads'
import { workerEntry } from '../../common/worker-url.js'

export function startWorker(relativeJsPath: string, importMetaUrl: string, options: WorkerOptions = {}): Worker {
  const entry = workerEntry(relativeJsPath, importMetaUrl)
  if (entry.url.pathname.endsWith('.ts')) {
    const source = `import { register } from 'tsx/esm/api'; register(); await import(${JSON.stringify(entry.url.href)})`
    return new Worker(source, { ...options, eval: true })
  }
  return new Worker(entry.url, { ...options, execArgv: entry.execArgv })
}
