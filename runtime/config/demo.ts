// The example config `npm start` runs (examples/demo.json): memory ports only,
// so it needs no privileges. Located relative to this module both from
// source (runtime/config/) and from the build (dist/runtime/config/).
import { fileURLToPath } from 'node:url'
import { loadConfig, type LoadedConfig } from './load.js'

export function demoConfigPath(): string {
  const up = import.meta.url.endsWith('.ts') ? '../../examples/demo.json' : '../../../examples/demo.json'
  return fileURLToPath(new URL(up, import.meta.url))
}

export function loadDemoConfig(): Promise<LoadedConfig> {
  return loadConfig(demoConfigPath())
}
