// `flowstack check CONFIG`: exit 0 and a one-screen summary of ports,
// instances and rules; or exit 1 and every problem, one per line.
import { compileRules } from '../../classifier/build.js'
import { IpVersion, Protocol, Direction, type Action, type Config, type Match, type Port } from '../../proto/gen/flowstack_pb.js'
import { ConfigError, formatProblem, loadConfig } from '../config/load.js'

export interface CheckIo {
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
}

function actionText(action: Action | undefined): string {
  switch (action?.kind.case) {
    case 'instance':
      return `instance ${action.kind.value}`
    case 'drop':
      return 'drop'
    default:
      return 'kernel'
  }
}

function portText(port: Port): string {
  const kind = port.kind
  switch (kind.case) {
    case 'tun':
      return `tun ${kind.value.device}`
    case 'tap':
      return `tap ${kind.value.device}`
    case 'afpacket':
      return `afpacket ${kind.value.interface}${kind.value.host !== undefined ? ` (host tap ${kind.value.host.device})` : ''}`
    case 'memory':
      return `memory wire ${kind.value.wire}`
    case 'pcap':
      return `pcap ${[kind.value.readFile && `read ${kind.value.readFile}`, kind.value.writeFile && `write ${kind.value.writeFile}`].filter(Boolean).join(', ')}`
    default:
      return '?'
  }
}

function matchText(match: Match | undefined): string {
  if (match === undefined) return 'any'
  const parts: string[] = []
  if (match.port !== '') parts.push(`port ${match.port}`)
  if (match.direction !== Direction.DIRECTION_UNSPECIFIED) parts.push(Direction[match.direction])
  if (match.ipVersion !== IpVersion.IP_VERSION_UNSPECIFIED) parts.push(IpVersion[match.ipVersion])
  if (match.protocolMatch.case === 'protocol') parts.push(Protocol[match.protocolMatch.value])
  if (match.protocolMatch.case === 'protocolNumber') parts.push(`protocol ${match.protocolMatch.value}`)
  if (match.localPrefix !== '') parts.push(`local ${match.localPrefix}`)
  if (match.localPorts !== undefined) parts.push(`local ports ${match.localPorts.from ?? match.localPorts.to}-${match.localPorts.to ?? match.localPorts.from}`)
  if (match.remotePrefix !== '') parts.push(`remote ${match.remotePrefix}`)
  if (match.remotePorts !== undefined) parts.push(`remote ports ${match.remotePorts.from ?? match.remotePorts.to}-${match.remotePorts.to ?? match.remotePorts.from}`)
  return parts.length === 0 ? 'any' : parts.join(' ')
}

export function summarizeConfig(config: Config, file: string): string {
  const lines: string[] = [`${file}: OK`]
  lines.push(`ports (${config.ports.length}):`)
  for (const port of config.ports) lines.push(`  ${port.name.padEnd(12)} ${portText(port)}, default ${actionText(port.defaultAction)}`)
  lines.push(`instances (${config.instances.length}):`)
  for (const instance of config.instances) {
    lines.push(`  ${instance.name.padEnd(12)} on ${instance.port}, ${instance.addresses.join(' ')}${instance.app !== '' ? `, app ${instance.app}` : ''}${instance.tls !== undefined ? ', tls' : ''}`)
  }
  const rules = compileRules(config)
  lines.push(`rules (${config.rules.length}, ${rules.tupleCount} distinct masks), highest priority first:`)
  const order = config.rules.map((rule, i) => ({ rule, i })).sort((a, b) => b.rule.priority - a.rule.priority || a.i - b.i)
  const shown = order.slice(0, 20)
  for (const { rule } of shown) lines.push(`  ${String(rule.priority).padStart(6)} ${rule.name.padEnd(16)} ${matchText(rule.match)} -> ${actionText(rule.action)}`)
  if (order.length > shown.length) lines.push(`  ... and ${order.length - shown.length} more`)
  return `${lines.join('\n')}\n`
}

export async function checkCommand(configPath: string, io: CheckIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout
  const stderr = io.stderr ?? process.stderr
  try {
    const loaded = await loadConfig(configPath)
    stdout.write(summarizeConfig(loaded.config, configPath))
    return 0
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    for (const problem of err.problems) stderr.write(`${formatProblem(problem)}\n`)
    return 1
  }
}
