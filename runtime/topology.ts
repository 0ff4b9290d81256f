// Pure helpers on the configured topology, shared by the runtime (main
// thread) and the switch worker.
import { formatIpAddress, parseIpAddress } from '../stacks/wire/address.js'
import type { Config } from '../proto/gen/flowstack_pb.js'

/**
 * An instance's MAC on an Ethernet port: the configured one, or a locally
 * administered unicast address derived from its name and index (stable
 * across restarts, so peers' neighbour caches stay right).
 */
export function instanceMac(configured: string, name: string, index: number, sharedMac?: Uint8Array): Uint8Array {
  if (configured === '' && sharedMac !== undefined) return sharedMac
  if (configured !== '') return Uint8Array.from(configured.split(/[:-]/).map((byte) => Number.parseInt(byte, 16)))
  let hash = 0x811c9dc5
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193) >>> 0
  return Uint8Array.of(0x02, 0x66, 0x73, (hash >>> 8) & 0xff, hash & 0xff, index & 0xff)
}

/** The address of "addr/len", canonical (as the stacks format it). */
export function addressOnly(cidr: string): string {
  const slash = cidr.indexOf('/')
  const text = slash < 0 ? cidr : cidr.slice(0, slash)
  const address = parseIpAddress(text)
  return address === null ? text : formatIpAddress(address)
}

/** Index of each instance's port in the config (0 when the name is unknown; validation refuses that). */
export function instancePortIndexes(config: Config): number[] {
  const portIndex = new Map(config.ports.map((p, i) => [p.name, i]))
  return config.instances.map((inst) => portIndex.get(inst.port) ?? 0)
}

/**
 * Per instance: the addresses it shares with its port's host TAP, and its
 * MAC. An instance on an address it shares with the kernel takes the
 * kernel's MAC too, unless configured: a peer's neighbour cache holds one
 * MAC per address, and the classifier sorts kernel from instance.
 */
export function instanceLinks(config: Config, hosts: readonly ({ mac: Uint8Array; addresses: readonly string[] } | undefined)[]): { shared: string[][]; macs: Uint8Array[] } {
  const ports = instancePortIndexes(config)
  const shared = config.instances.map((inst, i) => {
    const hostAddresses = new Set((hosts[ports[i]]?.addresses ?? []).map(addressOnly))
    return inst.addresses.map(addressOnly).filter((a) => hostAddresses.has(a))
  })
  const macs = config.instances.map((inst, i) => instanceMac(inst.mac, inst.name, i, shared[i].length > 0 ? hosts[ports[i]]?.mac : undefined))
  return { shared, macs }
}

/** The path of the first port/instance difference, or null when only rules (and others) differ. */
export function sameTopology(a: Config, b: Config): string | null {
  if (a.ports.length !== b.ports.length) return 'ports'
  for (let i = 0; i < a.ports.length; i++) if (a.ports[i].name !== b.ports[i].name) return `ports[${i}].name`
  if (a.instances.length !== b.instances.length) return 'instances'
  for (let i = 0; i < a.instances.length; i++) if (a.instances[i].name !== b.instances[i].name) return `instances[${i}].name`
  return null
}
