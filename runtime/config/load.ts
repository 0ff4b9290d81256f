// Configuration loading: JSON syntax -> ProtoJSON types -> semantic checks.
// Every stage reports all of its problems at once, each with the path of the
// field ("rules[1].match.localPorts.to") and the reason; a later stage runs
// only when the earlier ones found nothing, so messages never cascade.
import { fromBinary, fromJson, type JsonValue } from '@bufbuild/protobuf'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import { FlowstackError } from '../../common/errors.js'
import { parseIPv4, parseIPv6, parsePrefix, type Prefix } from '../../classifier/key.js'
import {
  CongestionControl,
  ConfigSchema,
  IpVersion,
  Protocol,
  type Action,
  type Config,
  type KeyPair,
  type PemSource,
  type PortRange,
} from '../../proto/gen/flowstack_pb.js'
import { checkMessageJson, type ConfigProblem } from './json-types.js'
import { jsonErrorOffset } from './json-position.js'

export type { ConfigProblem }

export class ConfigError extends FlowstackError {
  readonly problems: readonly ConfigProblem[]
  readonly file: string | undefined
  constructor(problems: readonly ConfigProblem[], file?: string) {
    const lines = problems.map(formatProblem)
    super('CONFIG_INVALID', `${file ?? 'config'}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${lines.join('\n')}`)
    this.name = 'ConfigError'
    this.problems = problems
    this.file = file
  }
}

export function formatProblem(problem: ConfigProblem): string {
  return problem.path === '' ? problem.message : `${problem.path}: ${problem.message}`
}

export interface LoadedConfig {
  config: Config
  /** Absolute path of the file, when loaded from one. */
  file: string | undefined
  /** Directory app modules and TLS files are resolved against. */
  baseDir: string
  /** Absolute path of each instance's app module, by instance name. */
  appPaths: Map<string, string>
}

export interface LoadOptions {
  /** Directory relative paths resolve against; default: the config file's directory, or cwd. */
  baseDir?: string
  /** Injected clock for certificate expiry checks. */
  now?: () => Date
}

/** Loads a `.json` (ProtoJSON) or `.binpb` (binary) config file; throws ConfigError listing every problem. */
export async function loadConfig(file: string, options: LoadOptions = {}): Promise<LoadedConfig> {
  const absolute = resolve(file)
  let bytes: Buffer
  try {
    bytes = readFileSync(absolute)
  } catch (err) {
    throw new ConfigError([{ path: '', message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }], file)
  }
  const baseDir = options.baseDir ?? dirname(absolute)
  if (absolute.endsWith('.binpb') || absolute.endsWith('.pb')) {
    let config: Config
    try {
      config = fromBinary(ConfigSchema, bytes)
    } catch (err) {
      throw new ConfigError([{ path: '', message: `not a valid binary flowstack.v1.Config: ${(err as Error).message}` }], file)
    }
    return checkLoaded(config, { ...options, baseDir }, absolute)
  }
  return parseConfigText(bytes.toString('utf8'), { ...options, baseDir }, absolute)
}

/** Parses ProtoJSON text. */
export function parseConfigText(text: string, options: LoadOptions = {}, file?: string): LoadedConfig {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new ConfigError([{ path: '', message: `invalid JSON: ${jsonSyntaxMessage(text, err as Error)}` }], file)
  }
  return parseConfigJson(json, options, file)
}

export function parseConfigJson(json: unknown, options: LoadOptions = {}, file?: string): LoadedConfig {
  const problems: ConfigProblem[] = []
  checkMessageJson(json, ConfigSchema, '', problems)
  if (problems.length > 0) throw new ConfigError(problems, file)
  let config: Config
  try {
    config = fromJson(ConfigSchema, json as JsonValue)
  } catch (err) {
    // The type walk above should have caught it; keep protobuf-es's words.
    throw new ConfigError([{ path: '', message: (err as Error).message }], file)
  }
  return checkLoaded(config, options, file)
}

function checkLoaded(config: Config, options: LoadOptions, file: string | undefined): LoadedConfig {
  const baseDir = options.baseDir ?? (file !== undefined ? dirname(file) : process.cwd())
  const problems: ConfigProblem[] = []
  const appPaths = new Map<string, string>()
  checkSemantics(config, { baseDir, now: options.now ?? (() => new Date()) }, problems, appPaths)
  if (problems.length > 0) throw new ConfigError(problems, file)
  return { config, file, baseDir, appPaths }
}

/** The reason and the line and column of a JSON syntax error. */
function jsonSyntaxMessage(text: string, err: Error): string {
  const offset = jsonErrorOffset(text)
  const found = offset < 0 ? undefined : offset >= text.length ? 'end of input' : JSON.stringify(text[offset])
  const reason = found === undefined ? err.message.replace(/, ".*" is not valid JSON$/s, '') : `unexpected ${found}`
  if (offset < 0) return reason
  const before = text.slice(0, offset)
  const line = before.split('\n').length
  const column = offset - before.lastIndexOf('\n')
  return `${reason} at line ${line} column ${column}`
}

// ---------------------------------------------------------------------------
// Semantic checks
// ---------------------------------------------------------------------------

const PROTOCOL_NAMES: Record<number, string> = { [Protocol.TCP]: 'TCP', [Protocol.UDP]: 'UDP', [Protocol.ICMP]: 'ICMP', [Protocol.ICMPV6]: 'ICMPV6' }
const MAC = /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$/

interface SemanticContext {
  baseDir: string
  now: () => Date
}

function checkSemantics(config: Config, ctx: SemanticContext, problems: ConfigProblem[], appPaths: Map<string, string>): void {
  const add = (path: string, message: string): void => {
    problems.push({ path, message })
  }
  const portNames = uniqueNames(config.ports, 'ports', 'port', add)
  const instanceNames = uniqueNames(config.instances, 'instances', 'instance', add)
  uniqueNames(config.rules, 'rules', 'rule', add)

  const checkAction = (action: Action | undefined, path: string, required: boolean): void => {
    if (action === undefined || action.kind.case === undefined) {
      if (required) add(path, 'required (one of instance, kernel, drop)')
      return
    }
    if (action.kind.case === 'instance' && !instanceNames.has(action.kind.value)) {
      add(`${path}.instance`, `no instance named ${JSON.stringify(action.kind.value)}`)
    }
  }

  config.ports.forEach((port, i) => {
    const path = `ports[${i}]`
    if (port.kind.case === undefined) add(path, 'one of tun, tap, afpacket, memory, pcap is required')
    checkAction(port.defaultAction, `${path}.defaultAction`, false)
    if (port.mtu !== 0 && (port.mtu < 576 || port.mtu > 65535)) add(`${path}.mtu`, `${port.mtu} is not an MTU (576-65535)`)
    if (port.queues > 64) add(`${path}.queues`, `${port.queues} queues is more than 64`)
    if (port.bufferSize !== 0 && (port.bufferSize < 256 || port.bufferSize > 65536 + 4096)) add(`${path}.bufferSize`, `${port.bufferSize} is not a buffer size (256-69632)`)
    const kind = port.kind
    switch (kind.case) {
      case 'tun':
      case 'tap': {
        const device = kind.value.device
        const devicePath = `${path}.${kind.case}.device`
        if (device === '') add(devicePath, 'required')
        else if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(device)) add(devicePath, `${JSON.stringify(device)} is not an interface name (1-15 characters)`)
        kind.value.kernelAddresses.forEach((a, j) => checkInterfaceAddress(a, `${path}.${kind.case}.kernelAddresses[${j}]`, add))
        if (kind.case === 'tap' && kind.value.mac !== '' && !MAC.test(kind.value.mac)) add(`${path}.tap.mac`, `${JSON.stringify(kind.value.mac)} is not a MAC address`)
        break
      }
      case 'afpacket': {
        if (kind.value.interface === '') add(`${path}.afpacket.interface`, 'required')
        const host = kind.value.host
        if (host !== undefined) {
          if (host.device === '') add(`${path}.afpacket.host.device`, 'required')
          if (host.mac !== '' && !MAC.test(host.mac)) add(`${path}.afpacket.host.mac`, `${JSON.stringify(host.mac)} is not a MAC address`)
          host.addresses.forEach((a, j) => checkInterfaceAddress(a, `${path}.afpacket.host.addresses[${j}]`, add))
        }
        break
      }
      case 'memory':
        if (kind.value.wire === '') add(`${path}.memory.wire`, 'required')
        if (kind.value.mac !== '' && !MAC.test(kind.value.mac)) add(`${path}.memory.mac`, `${JSON.stringify(kind.value.mac)} is not a MAC address`)
        break
      case 'pcap':
        if (kind.value.readFile === '' && kind.value.writeFile === '') add(`${path}.pcap`, 'readFile or writeFile is required')
        if (kind.value.readFile !== '' && !existsSync(resolve(ctx.baseDir, kind.value.readFile))) {
          add(`${path}.pcap.readFile`, `${JSON.stringify(kind.value.readFile)} not found`)
        }
        if (kind.value.speed < 0) add(`${path}.pcap.speed`, `${kind.value.speed} is negative`)
        break
    }
  })

  config.instances.forEach((instance, i) => {
    const path = `instances[${i}]`
    if (instance.app !== '') {
      const appPath = isAbsolute(instance.app) ? instance.app : resolve(ctx.baseDir, instance.app)
      if (!isFile(appPath)) add(`${path}.app`, `app module ${JSON.stringify(instance.app)} does not exist (looked for ${appPath})`)
      else appPaths.set(instance.name, appPath)
    }
    if (instance.port === '') add(`${path}.port`, 'required')
    else if (!portNames.has(instance.port)) add(`${path}.port`, `no port named ${JSON.stringify(instance.port)}`)
    if (instance.addresses.length === 0) add(`${path}.addresses`, 'at least one address is required')
    const seen = new Map<string, number>()
    instance.addresses.forEach((address, j) => {
      const prefix = checkInterfaceAddress(address, `${path}.addresses[${j}]`, add)
      if (prefix === null) return
      const id = `${prefix.ipVersion}:${prefix.addressWords.join(',')}`
      const other = seen.get(id)
      if (other !== undefined) add(`${path}.addresses[${j}]`, `duplicate address (also addresses[${other}])`)
      else seen.set(id, j)
    })
    instance.routes.forEach((route, j) => {
      const routePath = `${path}.routes[${j}]`
      const destination = parsePrefix(route.destination, { requireLength: true })
      if (destination === null) add(`${routePath}.destination`, `${JSON.stringify(route.destination)} is not a CIDR prefix`)
      if (route.gateway !== '') {
        const gateway = parsePrefix(route.gateway)
        if (gateway === null || gateway.length !== (gateway.ipVersion === 4 ? 32 : 128) || route.gateway.includes('/')) {
          add(`${routePath}.gateway`, `${JSON.stringify(route.gateway)} is not an IP address`)
        } else if (destination !== null && gateway.ipVersion !== destination.ipVersion) {
          add(`${routePath}.gateway`, `an IPv${gateway.ipVersion} gateway for an IPv${destination.ipVersion} destination`)
        }
      }
    })
    if (instance.mac !== '' && !MAC.test(instance.mac)) add(`${path}.mac`, `${JSON.stringify(instance.mac)} is not a MAC address`)
    const tls = instance.tls
    if (tls !== undefined) {
      const tlsPath = `${path}.tls`
      if (tls.certificate !== undefined) checkKeyPair(tls.certificate, `${tlsPath}.certificate`, ctx, add)
      else if (tls.sni.length > 0) add(`${tlsPath}.certificate`, 'required when sni certificates are given')
      tls.sni.forEach((sni, j) => {
        if (sni.serverName === '' || !/^(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$/.test(sni.serverName)) {
          add(`${tlsPath}.sni[${j}].serverName`, `${JSON.stringify(sni.serverName)} is not a server name`)
        }
        if (sni.certificate === undefined) add(`${tlsPath}.sni[${j}].certificate`, 'required')
        else checkKeyPair(sni.certificate, `${tlsPath}.sni[${j}].certificate`, ctx, add)
      })
      tls.ca.forEach((ca, j) => checkPem(ca, `${tlsPath}.ca[${j}]`, ctx, add))
      tls.alpn.forEach((protocol, j) => {
        if (protocol === '' || Buffer.byteLength(protocol) > 255) add(`${tlsPath}.alpn[${j}]`, `${JSON.stringify(protocol)} is not an ALPN protocol id (1-255 bytes)`)
      })
    }
    const tcp = instance.tcp
    if (tcp !== undefined) {
      if (tcp.mss !== 0 && (tcp.mss < 88 || tcp.mss > 65495)) add(`${path}.tcp.mss`, `${tcp.mss} is not an MSS (88-65495)`)
      // The same bounds the stack's TCP applies (stacks/core/tcp/config.ts), so a config that passes check starts.
      if (tcp.initialWindow > 1000) add(`${path}.tcp.initialWindow`, `${tcp.initialWindow} segments is more than 1000`)
      if (tcp.congestionControl === CongestionControl.CUBIC) add(`${path}.tcp.congestionControl`, 'CUBIC is not implemented yet (NEWRENO is)')
      for (const [field, value] of [['receiveBuffer', tcp.receiveBuffer], ['sendBuffer', tcp.sendBuffer]] as const) {
        if (value !== 0 && (value < 1024 || value > 2 ** 30)) add(`${path}.tcp.${field}`, `${value} bytes is not a buffer size (1024 to 1073741824)`)
      }
      if (tcp.synRetries > 100) add(`${path}.tcp.synRetries`, `${tcp.synRetries} is more than 100`)
      if (tcp.maxRetransmits > 100) add(`${path}.tcp.maxRetransmits`, `${tcp.maxRetransmits} is more than 100`)
      if (tcp.keepaliveSeconds > 2_147_483) add(`${path}.tcp.keepaliveSeconds`, `${tcp.keepaliveSeconds} is more than 2147483 (24 days)`)
      if (tcp.timeWaitMs > 1_200_000) add(`${path}.tcp.timeWaitMs`, `${tcp.timeWaitMs} is more than 1200000 (2 MSL of 10 minutes)`)
      if (tcp.ephemeralPorts !== undefined) checkPortRange(tcp.ephemeralPorts, `${path}.tcp.ephemeralPorts`, add)
    }
    const restart = instance.restart
    if (restart !== undefined && restart.backoffMaxMs !== 0 && restart.backoffMaxMs < restart.backoffInitialMs) {
      add(`${path}.restart.backoffMaxMs`, `${restart.backoffMaxMs} is less than backoffInitialMs ${restart.backoffInitialMs}`)
    }
  })

  config.rules.forEach((rule, i) => {
    const path = `rules[${i}]`
    checkAction(rule.action, `${path}.action`, true)
    const match = rule.match
    if (match === undefined) return
    const matchPath = `${path}.match`
    if (match.port !== '' && !portNames.has(match.port)) add(`${matchPath}.port`, `no port named ${JSON.stringify(match.port)}`)
    let protocolName: string | undefined
    if (match.protocolMatch.case === 'protocolNumber') {
      if (match.protocolMatch.value > 255) add(`${matchPath}.protocolNumber`, `${match.protocolMatch.value} is not an IP protocol number (0-255)`)
      protocolName = String(match.protocolMatch.value)
    } else if (match.protocolMatch.case === 'protocol') {
      protocolName = PROTOCOL_NAMES[match.protocolMatch.value]
    }
    const prefixes: Array<[string, Prefix]> = []
    for (const field of ['localPrefix', 'remotePrefix'] as const) {
      const text = match[field]
      if (text === '') continue
      const prefix = parsePrefix(text, { requireLength: true })
      if (prefix === null) {
        add(`${matchPath}.${field}`, `${JSON.stringify(text)} is not a CIDR prefix`)
        continue
      }
      prefixes.push([field, prefix])
      const wanted = match.ipVersion === IpVersion.IPV4 ? 4 : match.ipVersion === IpVersion.IPV6 ? 6 : undefined
      if (wanted !== undefined && prefix.ipVersion !== wanted) {
        add(`${matchPath}.${field}`, `${JSON.stringify(text)} is an IPv${prefix.ipVersion} prefix but ipVersion is IPV${wanted}`)
      }
      if (protocolName === 'ICMP' && prefix.ipVersion === 6) add(`${matchPath}.${field}`, `${JSON.stringify(text)} is an IPv6 prefix but protocol is ICMP (use ICMPV6)`)
      if (protocolName === 'ICMPV6' && prefix.ipVersion === 4) add(`${matchPath}.${field}`, `${JSON.stringify(text)} is an IPv4 prefix but protocol is ICMPV6 (use ICMP)`)
    }
    if (prefixes.length === 2 && prefixes[0][1].ipVersion !== prefixes[1][1].ipVersion) {
      add(`${matchPath}.remotePrefix`, `an IPv${prefixes[1][1].ipVersion} prefix with an IPv${prefixes[0][1].ipVersion} localPrefix never matches`)
    }
    if (match.ipVersion === IpVersion.IPV6 && protocolName === 'ICMP') add(`${matchPath}.protocol`, 'ICMP with ipVersion IPV6 never matches (use ICMPV6)')
    if (match.ipVersion === IpVersion.IPV4 && protocolName === 'ICMPV6') add(`${matchPath}.protocol`, 'ICMPV6 with ipVersion IPV4 never matches (use ICMP)')
    for (const field of ['localPorts', 'remotePorts'] as const) {
      const range = match[field]
      if (range === undefined) continue
      checkPortRange(range, `${matchPath}.${field}`, add)
      if (protocolName !== undefined && protocolName !== 'TCP' && protocolName !== 'UDP' && protocolName !== '6' && protocolName !== '17') {
        add(`${matchPath}.${field}`, `port ranges need protocol TCP or UDP (protocol is ${protocolName})`)
      }
    }
  })

  const control = config.control
  if (control !== undefined && control.mode > 0o777) add('control.mode', `${control.mode} is not a file mode (0-511)`)
  const classifier = config.classifier
  if (classifier !== undefined) {
    if (classifier.maxFlows > 16_777_216) add('classifier.maxFlows', `${classifier.maxFlows} is more than 16777216`)
    if (classifier.fragmentHoldPackets > 65536) add('classifier.fragmentHoldPackets', `${classifier.fragmentHoldPackets} is more than 65536`)
  }
}

function uniqueNames(items: ReadonlyArray<{ name: string }>, list: string, what: string, add: (path: string, message: string) => void): Set<string> {
  const seen = new Map<string, number>()
  items.forEach((item, i) => {
    const path = `${list}[${i}].name`
    if (item.name === '') {
      add(path, 'required')
      return
    }
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(item.name)) {
      add(path, `${JSON.stringify(item.name)} is not a name (letters, digits, "_", "-", ".", at most 63)`)
    }
    const other = seen.get(item.name)
    if (other !== undefined) add(path, `duplicate ${what} name ${JSON.stringify(item.name)} (also ${list}[${other}])`)
    else seen.set(item.name, i)
  })
  return new Set(seen.keys())
}

function checkPortRange(range: PortRange, path: string, add: (path: string, message: string) => void): void {
  let valid = true
  for (const bound of ['from', 'to'] as const) {
    const value = range[bound]
    if (value !== undefined && value > 65535) {
      add(`${path}.${bound}`, `${value} is not a port number`)
      valid = false
    }
  }
  if (range.from === undefined && range.to === undefined) add(path, 'from or to is required')
  else if (valid && range.from !== undefined && range.to !== undefined && range.from > range.to) {
    add(path, `from ${range.from} is greater than to ${range.to}`)
  }
}

/** An interface address: "addr/len" with the host part kept. */
function checkInterfaceAddress(text: string, path: string, add: (path: string, message: string) => void): Prefix | null {
  const prefix = parsePrefix(text, { requireLength: true })
  if (prefix === null) {
    add(path, `${JSON.stringify(text)} is not a CIDR prefix`)
    return null
  }
  return prefix
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

function readPem(source: { file?: string; pem?: string }, path: string, fileField: string, pemField: string, ctx: SemanticContext, add: (path: string, message: string) => void): string | undefined {
  if (source.file !== undefined) {
    try {
      return readFileSync(resolve(ctx.baseDir, source.file), 'utf8')
    } catch (err) {
      add(`${path}.${fileField}`, `cannot read ${JSON.stringify(source.file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
      return undefined
    }
  }
  if (source.pem !== undefined) return source.pem
  add(path, `${fileField} or ${pemField} is required`)
  return undefined
}

function checkPem(source: PemSource, path: string, ctx: SemanticContext, add: (path: string, message: string) => void): void {
  const text = readPem(
    { file: source.source.case === 'file' ? source.source.value : undefined, pem: source.source.case === 'pem' ? source.source.value : undefined },
    path,
    'file',
    'pem',
    ctx,
    add,
  )
  if (text === undefined) return
  try {
    new X509Certificate(text)
  } catch {
    add(`${path}.${source.source.case}`, 'not a PEM certificate')
  }
}

function checkKeyPair(pair: KeyPair, path: string, ctx: SemanticContext, add: (path: string, message: string) => void): void {
  const chainText = readPem(
    { file: pair.chain.case === 'certFile' ? pair.chain.value : undefined, pem: pair.chain.case === 'certPem' ? pair.chain.value : undefined },
    path,
    'certFile',
    'certPem',
    ctx,
    add,
  )
  const keyText = readPem(
    { file: pair.key.case === 'keyFile' ? pair.key.value : undefined, pem: pair.key.case === 'keyPem' ? pair.key.value : undefined },
    path,
    'keyFile',
    'keyPem',
    ctx,
    add,
  )
  let certificate: X509Certificate | undefined
  if (chainText !== undefined) {
    try {
      certificate = new X509Certificate(chainText)
    } catch {
      add(`${path}.${pair.chain.case}`, 'not a PEM certificate')
    }
    if (certificate !== undefined && new Date(certificate.validTo).getTime() < ctx.now().getTime()) {
      add(`${path}.${pair.chain.case}`, `certificate expired on ${new Date(certificate.validTo).toISOString()}`)
    }
  }
  if (keyText !== undefined) {
    try {
      const key = createPrivateKey({ key: keyText, passphrase: pair.passphrase === '' ? undefined : pair.passphrase })
      if (certificate !== undefined && !certificate.checkPrivateKey(key)) add(`${path}.${pair.key.case}`, 'private key does not match the certificate')
    } catch {
      add(`${path}.${pair.key.case}`, 'not a PEM private key (or wrong passphrase)')
    }
  }
}

