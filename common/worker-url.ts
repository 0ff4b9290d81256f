import { Worker, type WorkerOptions } from 'node:worker_threads'

/**
 * Where a worker thread's entry file lives, and how to start it.
 *
 * Built code (dist/, what users run) starts `.js` workers directly. Under
 * vitest the same modules run from `.ts` sources, so the worker is the `.ts`
 * sibling started with the tsx loader. Callers always name the `.js` file.
 */
export interface WorkerEntry {
  url: URL
  execArgv: string[]
}

export function workerEntry(relativeJsPath: string, importMetaUrl: string): WorkerEntry {
  if (importMetaUrl.endsWith('.ts')) {
    return {
      url: new URL(relativeJsPath.replace(/\.js$/, '.ts'), importMetaUrl),
      execArgv: ['--import', 'tsx'],
    }
  }
  return { url: new URL(relativeJsPath, importMetaUrl), execArgv: [] }
}

/**
 * Starts a worker thread on `relativeJsPath`. From `.ts` sources (vitest),
 * Node 20 does not apply a worker's `execArgv: ['--import', 'tsx']` to the
 * worker's own entry module, so a tiny eval'd entry registers tsx first and
 * then imports the file. (Piscina is unaffected: its own worker script is
 * JavaScript and imports the task file after execArgv took effect.)
 */
export function startWorker(relativeJsPath: string, importMetaUrl: string, options: WorkerOptions = {}): Worker {
  const entry = workerEntry(relativeJsPath, importMetaUrl)
  if (entry.execArgv.length > 0) {
    const tsxApi = import.meta.resolve('tsx/esm/api')
    const source = `import { register } from ${JSON.stringify(tsxApi)}; register(); await import(${JSON.stringify(entry.url.href)})`
    return new Worker(source, { ...options, eval: true })
  }
  return new Worker(entry.url, options)
}
