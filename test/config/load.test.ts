import { toBinary } from '@bufbuild/protobuf'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, formatProblem, loadConfig, loadDemoConfig, parseConfigJson, parseConfigText } from '../../runtime/config/index.js'
import { ConfigSchema, Protocol } from '../../proto/gen/flowstack_pb.js'
import { classifierFromConfig, Direction, LinkKind, REASON_NAMES } from '../../classifier/index.js'
import { buildPacket } from '../classifier/packets.js'
import { tcpOptions } from '../../runtime/host/instance.js'

const fixtures = new URL('../fixtures/config/', import.meta.url).pathname
const scratch = mkdtempSync(join(tmpdir(), 'fs-config-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

function base(): Record<string, any> {
  return {
    ports: [{ name: 'wire0', tun: { device: 'fs0' }, defaultAction: { kernel: {} } }],
    instances: [{ name: 'web', app: './apps/web.js', port: 'wire0', addresses: ['198.51.100.2/24'] }],
    rules: [
      { name: 'block-bad', priority: 100, match: { remotePrefix: '203.0.113.0/24' }, action: { drop: {} } },
      { name: 'web', priority: 10, match: { protocol: 'TCP', localPorts: { from: 443, to: 443 } }, action: { instance: 'web' } },
      { name: 'dns', priority: 10, match: { protocol: 'UDP', localPrefix: '2001:db8::/32', localPorts: { from: 53, to: 53 } }, action: { instance: 'web' } },
    ],
  }
}

/** Every problem line the loader reports for this config. */
function problems(json: unknown, options: { now?: () => Date } = {}): string[] {
  try {
    parseConfigJson(json, { baseDir: fixtures, ...options })
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).code).toBe('CONFIG_INVALID')
    return (err as ConfigError).problems.map(formatProblem)
  }
  return []
}

describe('config loading', () => {
  it('accepts the issue example and resolves the app relative to the config', () => {
    const loaded = parseConfigJson(base(), { baseDir: fixtures })
    expect(loaded.config.rules[1].match?.protocolMatch).toEqual({ case: 'protocol', value: Protocol.TCP })
    expect(loaded.appPaths.get('web')).toBe(join(fixtures, 'apps/web.js'))
  })

  it('reports the issue examples, all at once, with path and reason', () => {
    const config = base()
    config.instances[0].addresses.push('198.51.100.300/24')
    config.rules[1].match.localPorts.to = 70000
    config.rules[2].action = { instance: 'api' }
    expect(problems(config)).toEqual([
      'instances[0].addresses[1]: "198.51.100.300/24" is not a CIDR prefix',
      'rules[1].match.localPorts.to: 70000 is not a port number',
      'rules[2].action.instance: no instance named "api"',
    ])
  })

  it('reports unknown fields with a suggestion, and type errors, by path', () => {
    const config = base()
    config.rules[0].match.localPort = { from: 1 }
    config.ports[0].tun.devcie = 'x'
    config.rules[1].match.protocol = 'SCTP'
    config.rules[1].priority = 'high'
    config.instances[0].addresses = '198.51.100.2/24'
    config.colour = 'blue'
    config.ports[0].tap = { device: 'fs1' }
    expect(problems(config)).toEqual([
      'ports[0].tun.devcie: unknown field (did you mean "device"?)',
      'ports[0].tap: only one of tun, tap, afpacket, memory, pcap may be set (also got tun)',
      'instances[0].addresses: expected an array, got "198.51.100.2/24"',
      'rules[0].match.localPort: unknown field (did you mean "localPorts"?)',
      'rules[1].priority: expected a 32-bit integer, got "high"',
      'rules[1].match.protocol: "SCTP" is not one of TCP, UDP, ICMP, ICMPV6',
      'colour: unknown field',
    ])
  })

  it('reports duplicate names, from > to, and wrong prefix families', () => {
    const config = base()
    config.instances.push({ name: 'web', port: 'wire0', addresses: ['198.51.100.3/24'] })
    config.rules.push({ name: 'web', priority: 1, match: { localPorts: { from: 90, to: 80 } }, action: { kernel: {} } })
    config.rules.push({ name: 'v4only', priority: 1, match: { ipVersion: 'IPV4', localPrefix: '2001:db8::/32' }, action: { kernel: {} } })
    config.rules.push({ name: 'mixed', priority: 1, match: { localPrefix: '198.51.100.0/24', remotePrefix: '2001:db8::/32' }, action: { kernel: {} } })
    expect(problems(config)).toEqual([
      'instances[1].name: duplicate instance name "web" (also instances[0])',
      'rules[3].name: duplicate rule name "web" (also rules[1])',
      'rules[3].match.localPorts: from 90 is greater than to 80',
      'rules[4].match.localPrefix: "2001:db8::/32" is an IPv6 prefix but ipVersion is IPV4',
      'rules[5].match.remotePrefix: an IPv6 prefix with an IPv4 localPrefix never matches',
    ])
  })

  it('reports an app module that does not exist, and missing or unknown references', () => {
    const config = base()
    config.instances[0].app = './apps/missing.js'
    config.instances.push({ name: 'api', port: 'wire9', addresses: [] })
    config.rules.push({ name: 'noaction', match: { port: 'wire7', protocolNumber: 300 } })
    config.rules.push({ name: 'icmp-ports', match: { protocol: 'ICMP', localPorts: { from: 1 } }, action: { drop: {} } })
    config.ports.push({ name: 'empty' })
    expect(problems(config)).toEqual([
      'ports[1]: one of tun, tap, afpacket, memory, pcap is required',
      `instances[0].app: app module "./apps/missing.js" does not exist (looked for ${join(fixtures, 'apps/missing.js')})`,
      'instances[1].port: no port named "wire9"',
      'instances[1].addresses: at least one address is required',
      'rules[3].action: required (one of instance, kernel, drop)',
      'rules[3].match.port: no port named "wire7"',
      'rules[3].match.protocolNumber: 300 is not an IP protocol number (0-255)',
      'rules[4].match.localPorts: port ranges need protocol TCP or UDP (protocol is ICMP)',
    ])
  })

  it('checks TLS files: unreadable, key mismatch, expiry', () => {
    const config = base()
    config.instances[0].tls = {
      certificate: { certFile: 'cert.pem', keyFile: 'other-key.pem' },
      sni: [{ serverName: 'other.test', certificate: { certFile: 'nope.pem', keyFile: 'other-key.pem' } }],
      ca: [{ pem: 'not a certificate' }],
      minVersion: 'TLS1_3',
      clientCertificates: 'REQUIRE',
      alpn: ['h2', ''],
    }
    expect(problems(config)).toEqual([
      'instances[0].tls.certificate.keyFile: private key does not match the certificate',
      'instances[0].tls.sni[0].certificate.certFile: cannot read "nope.pem": ENOENT',
      'instances[0].tls.ca[0].pem: not a PEM certificate',
      'instances[0].tls.alpn[1]: "" is not an ALPN protocol id (1-255 bytes)',
    ])
    config.instances[0].tls = { certificate: { certFile: 'cert.pem', keyFile: 'key.pem' } }
    expect(problems(config)).toEqual([])
    const future = problems(config, { now: () => new Date('2099-01-01T00:00:00Z') })
    expect(future).toHaveLength(1)
    expect(future[0]).toMatch(/^instances\[0\]\.tls\.certificate\.certFile: certificate expired on \d{4}-/)
  })

  it('checks TCP settings against the bounds the stack applies, and maps them to its options', () => {
    const config = base()
    config.instances[0].tcp = { mss: 60, initialWindow: 5000, congestionControl: 'CUBIC', receiveBuffer: 100, synRetries: 500, timeWaitMs: 5_000_000 }
    expect(problems(config)).toEqual([
      'instances[0].tcp.mss: 60 is not an MSS (88-65495)',
      'instances[0].tcp.initialWindow: 5000 segments is more than 1000',
      'instances[0].tcp.congestionControl: CUBIC is not implemented yet (NEWRENO is)',
      'instances[0].tcp.receiveBuffer: 100 bytes is not a buffer size (1024 to 1073741824)',
      'instances[0].tcp.synRetries: 500 is more than 100',
      'instances[0].tcp.timeWaitMs: 5000000 is more than 1200000 (2 MSL of 10 minutes)',
    ])
    config.instances[0].tcp = { mss: 1200, initialWindow: 4, noDelay: true, keepaliveSeconds: 30, timeWaitMs: 2000, receiveBuffer: 65536, sack: false, ephemeralPorts: { from: 50000, to: 50100 } }
    const instance = parseConfigJson(config, { baseDir: fixtures }).config.instances[0]
    expect(tcpOptions(instance)).toEqual({
      receiveBufferSize: 65536,
      sack: false,
      mss: 1200,
      initialWindow: 4,
      noDelay: true,
      keepAlive: { enabled: true, idleMs: 30_000 },
      mslMs: 1000,
      ephemeralPortMin: 50000,
      ephemeralPortMax: 50100,
    })
  })

  it('reports JSON syntax errors with line and column', () => {
    expect(() => parseConfigText('{\n  "ports": [,]\n}')).toThrow(/invalid JSON: unexpected "," at line 2 column 13/)
    expect(() => parseConfigText('{"ports": [')).toThrow(/invalid JSON: unexpected end of input at line 1 column 12/)
    expect(() => parseConfigText('{"a": tru}')).toThrow(/invalid JSON: unexpected "t" at line 1 column 7/)
  })

  it('loads .json and .binpb files the same way', async () => {
    const jsonFile = join(scratch, 'config.json')
    const config = base()
    config.instances[0].app = join(fixtures, 'apps/web.js')
    writeFileSync(jsonFile, JSON.stringify(config))
    const fromJsonFile = await loadConfig(jsonFile)
    const binFile = join(scratch, 'config.binpb')
    writeFileSync(binFile, toBinary(ConfigSchema, fromJsonFile.config))
    const fromBinFile = await loadConfig(binFile)
    expect(fromBinFile.config.rules.map((r) => r.name)).toEqual(['block-bad', 'web', 'dns'])
    expect(fromBinFile.appPaths.get('web')).toBe(join(fixtures, 'apps/web.js'))
    writeFileSync(binFile, Uint8Array.of(0xff, 0xff, 0xff))
    await expect(loadConfig(binFile)).rejects.toThrow(/not a valid binary flowstack.v1.Config/)
    await expect(loadConfig(join(scratch, 'absent.json'))).rejects.toThrow(/cannot read .*ENOENT/)
  })

  it('ships valid example configs, and the demo config classifies as its rules say', async () => {
    const demo = await loadDemoConfig()
    expect(demo.config.ports[0].kind.case).toBe('memory')
    expect(demo.config.instances.map((i) => i.name)).toEqual(['web', 'client'])
    await loadConfig(new URL('../../examples/tun.json', import.meta.url).pathname)
    const classifier = classifierFromConfig(demo.config, { now: () => 0 })
    const decide = (src: string, dst: string, dstPort: number): string => {
      const p = buildPacket({ ipVersion: src.includes(':') ? 6 : 4, protocol: 6, src, dst, srcPort: 40000, dstPort })
      const d = classifier.classifyPacket(p, 0, p.length, LinkKind.Ip, 0, Direction.In)
      return `${d.owner}/${classifier.ruleName(d.rule)}/${REASON_NAMES[d.reason]}`
    }
    expect(decide('198.51.100.3', '198.51.100.2', 80)).toBe('0/web-http/rule')
    expect(decide('2001:db8::3', '2001:db8::2', 80)).toBe('0/web-http6/rule')
    expect(decide('198.51.100.3', '198.51.100.2', 8080)).toBe('-1/admin-to-kernel/rule')
    expect(decide('203.0.113.5', '198.51.100.2', 80)).toBe('-2/drop-blocked/rule')
    expect(decide('198.51.100.3', '198.51.100.2', 22)).toBe('-1/null/default')
  })
})
