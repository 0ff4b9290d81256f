#!/usr/bin/env node
// Builds the nexus addon (nexus/native) with node-gyp.
//
// npm runs install scripts with its bundled node-gyp on PATH and points
// `npm_config_node_gyp` at it; outside npm we look for the copy bundled with
// the npm that ships next to this node. A bare node-gyp downloads Node's
// headers, which fails offline, so when the distribution installs them under
// /usr/include/node we pass --nodedir=/usr explicitly (not relying on .npmrc).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

function findNodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp
  if (fromNpm && existsSync(fromNpm)) return { cmd: process.execPath, args: [fromNpm] }
  const prefix = resolve(dirname(process.execPath), '..')
  for (const candidate of [
    join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
    join(prefix, 'node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
    join(root, 'node_modules/node-gyp/bin/node-gyp.js'),
  ]) {
    if (existsSync(candidate)) return { cmd: process.execPath, args: [candidate] }
  }
  return { cmd: 'node-gyp', args: [] }
}

if (process.platform !== 'linux') {
  console.log('flowstack: the nexus addon is Linux-only; skipping the native build')
  process.exit(0)
}

const gyp = findNodeGyp()
const args = [...gyp.args, 'rebuild']
if (existsSync('/usr/include/node/node.h')) args.push('--nodedir=/usr')
if (process.argv.includes('--debug')) args.push('--debug')
const jobs = process.env.JOBS ?? '2'
args.push(`--jobs=${jobs}`)

// The kernel ports need the addon; everything else (memory ports, stacks,
// the runtime on memory ports) works without it. So a failed build does not
// fail `npm install` for users without a compiler, unless asked to (CI, or
// --strict): there a missing addon must be an error, not a surprise later.
const strict = process.argv.includes('--strict') || process.env.CI === 'true' || process.env.FLOWSTACK_NATIVE_STRICT === '1'
const result = spawnSync(gyp.cmd, args, { cwd: root, stdio: 'inherit' })
const failed = result.error !== undefined || result.status !== 0
if (failed) {
  const why = result.error !== undefined ? `could not run node-gyp: ${result.error.message}` : `node-gyp exited with ${result.status}`
  console.error(`flowstack: building the nexus addon failed (${why}); TUN/TAP/AF_PACKET ports will be unavailable`)
  process.exit(strict ? 1 : 0)
}
