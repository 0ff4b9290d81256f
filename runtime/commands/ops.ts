// `flowstack stat`, `flowstack flows`, `flowstack reload`: requests to a
// running runtime over its control socket.
import { resolve } from 'node:path'
import { create, toJson } from '@bufbuild/protobuf'
import { FlowsRequestSchema, FlowsResponseSchema, InstanceState, ReloadRequestSchema, StatRequestSchema, StatResponseSchema, type ControlResponse } from '../../proto/gen/flowstack_pb.js'
import { formatProblem } from '../config/load.js'
import { controlRequest, defaultControlPath } from '../control.js'

export interface OpsOptions {
  socket?: string
  json?: boolean
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
}

async function ask(options: OpsOptions, request: Parameters<typeof controlRequest>[1]): Promise<ControlResponse | null> {
  const stderr = options.stderr ?? process.stderr
  try {
    const response = await controlRequest(options.socket ?? defaultControlPath(), request)
    if (response.response.case === 'error') {
      stderr.write(`${response.response.value.code}: ${response.response.value.message}\n`)
      return null
    }
    return response
  } catch (err) {
    stderr.write(`${(err as Error).message}\n`)
    return null
  }
}

export async function statCommand(options: OpsOptions = {}): Promise<number> {
  const stdout = options.stdout ?? process.stdout
  const response = await ask(options, { request: { case: 'stat', value: create(StatRequestSchema) } })
  if (response === null || response.response.case !== 'stat') return 1
  const stat = response.response.value
  if (options.json) {
    stdout.write(`${JSON.stringify(toJson(StatResponseSchema, stat))}\n`)
    return 0
  }
  const lines: string[] = [`uptime ${(Number(stat.uptimeMs) / 1000).toFixed(1)} s`, 'ports:']
  for (const p of stat.ports) {
    lines.push(`  ${p.name} (${p.kind}): rx ${p.rxPackets} packets ${p.rxBytes} bytes, tx ${p.txPackets} packets ${p.txBytes} bytes; drops ${p.drops.map((d) => `${d.name} ${d.value}`).join(', ')}`)
  }
  lines.push('instances:')
  for (const i of stat.instances) {
    lines.push(`  ${i.name}: ${InstanceState[i.state].toLowerCase()}, restarts ${i.restarts}, rx ${i.rxPackets} tx ${i.txPackets} packets, ${i.flows} flows${i.lastError !== '' ? `, last error: ${i.lastError}` : ''}`)
    for (const family of i.families) {
      const nonzero = family.counters.filter((c) => c.value !== 0n)
      if (nonzero.length > 0) lines.push(`    ${family.name}: ${nonzero.map((c) => `${c.name} ${c.value}`).join(', ')}`)
    }
  }
  const c = stat.classifier
  if (c !== undefined) {
    lines.push(`classifier: ${c.flows} flows, rule generation ${c.ruleGeneration}`)
    lines.push(`  reasons: ${c.reasons.map((r) => `${r.name} ${r.value}`).join(', ')}`)
    lines.push(`  actions: ${c.actions.map((r) => `${r.name} ${r.value}`).join(', ')}`)
    lines.push(`  spoofed: ${c.spoofed.map((r) => `${r.name} ${r.value}`).join(', ')}`)
    lines.push(`  rules: ${c.rules.map((r) => `${r.name} ${r.value}`).join(', ')}`)
  }
  stdout.write(`${lines.join('\n')}\n`)
  return 0
}

export async function flowsCommand(options: OpsOptions & { owner?: string; limit?: number } = {}): Promise<number> {
  const stdout = options.stdout ?? process.stdout
  const response = await ask(options, { request: { case: 'flows', value: create(FlowsRequestSchema, { owner: options.owner ?? '', limit: options.limit ?? 0 }) } })
  if (response === null || response.response.case !== 'flows') return 1
  const flows = response.response.value
  if (options.json) {
    stdout.write(`${JSON.stringify(toJson(FlowsResponseSchema, flows))}\n`)
    return 0
  }
  const lines = [`${flows.flows.length} of ${flows.total} flow(s)`]
  for (const f of flows.flows) {
    const k = f.key!
    const proto = k.protocol === 6 ? 'tcp' : k.protocol === 17 ? 'udp' : `ip/${k.protocol}`
    const local = k.localAddress.includes(':') ? `[${k.localAddress}]:${k.localPort}` : `${k.localAddress}:${k.localPort}`
    const remote = k.remoteAddress.includes(':') ? `[${k.remoteAddress}]:${k.remotePort}` : `${k.remoteAddress}:${k.remotePort}`
    lines.push(`  ${proto} ${local} <- ${remote} on ${k.port}: ${f.owner} ${f.state} ${f.packets} packets ${f.bytes} bytes${f.rule !== '' ? ` (rule ${f.rule})` : ''}`)
  }
  stdout.write(`${lines.join('\n')}\n`)
  return 0
}

export async function reloadCommand(options: OpsOptions & { config?: string } = {}): Promise<number> {
  const stdout = options.stdout ?? process.stdout
  const stderr = options.stderr ?? process.stderr
  const response = await ask(options, { request: { case: 'reload', value: create(ReloadRequestSchema, { configPath: options.config === undefined ? '' : resolve(options.config) }) } })
  if (response === null || response.response.case !== 'reload') return 1
  const reload = response.response.value
  if (!reload.applied) {
    for (const problem of reload.problems) stderr.write(`${formatProblem(problem)}\n`)
    return 1
  }
  stdout.write(`reloaded ${reload.rules} rule(s)\n`)
  return 0
}
