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
