// Kernel fallback per packet (DESIGN.md §5): an AF_PACKET port owns a wire
// interface; a host TAP carries the kernel's addresses and MAC, so what the
// classifier gives to `kernel` is written into the TAP and what the kernel
// sends through the TAP leaves on the wire. ARP, ping, SSH and every port no
// instance claimed keep working through the kernel next to the instances.
//
// The owned interface stays up (AF_PACKET needs it) but the kernel's own
// stack must stop answering on it, or every frame would be answered twice:
// - ARP: the interface is set NOARP (arp_rcv drops on IFF_NOARP devices);
// - IPv4: strict reverse-path filtering; the kernel's routes now point at
//   the TAP, so packets arriving on the owned interface fail it;
// - IPv6: disabled on the owned interface.
// (A tc ingress drop would be cleaner, AF_PACKET taps see frames before tc
// ingress, but it needs act_gact, which kernels without modules lack.)
// Everything is put back on close.
import { execFileSync } from 'node:child_process'
import type { HostTap } from '../proto/gen/flowstack_pb.js'
import { FlowstackError } from '../common/errors.js'
import type { NexusPort } from '../nexus/ports/port.js'

export interface HostTapOptions {
  /** The owned interface (the AF_PACKET port's). */
  wireInterface: string
  /** The owned interface's MAC: the kernel's MAC on the TAP unless the config names one. */
  wireMac: Uint8Array | undefined
  config: HostTap
  netns?: string
  mtu?: number
}

/**
 * What gives an owned interface back to the kernel, as commands any thread
 * can run: the switch worker runs them on close; the main thread runs them
 * when the worker died or stopped answering before it could.
 */
export interface HostRestorePlan {
  netns?: string
  commands: string[][]
}

/** Runs a restore plan; each command is idempotent, so a plan the worker ran in part is safe to run again. */
export function runRestorePlan(plan: HostRestorePlan): void {
  for (const argv of plan.commands) run(plan.netns, argv)
}

/** Runs `argv` in the namespace (or here); returns stderr text on failure, '' on success. */
function run(netns: string | undefined, argv: string[]): string {
  const full = netns === undefined ? argv : ['ip', 'netns', 'exec', netns, ...argv]
  try {
    execFileSync(full[0], full.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10000 })
    return ''
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim() || 'failed'
  }
}

function must(netns: string | undefined, argv: string[], what: string): void {
  const failed = run(netns, argv)
  if (failed !== '') throw new FlowstackError('RUNTIME_HOST_TAP', `${what}: ${failed}`)
}

function readSysctl(netns: string | undefined, key: string): string {
  const full = netns === undefined ? ['sysctl', '-n', key] : ['ip', 'netns', 'exec', netns, 'sysctl', '-n', key]
  try {
    return execFileSync(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'ignore'], timeout: 10000 }).toString().trim()
  } catch {
    return ''
  }
}

export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':')
}

export function parseMac(text: string): Uint8Array {
  return Uint8Array.from(text.split(/[:-]/).map((byte) => Number.parseInt(byte, 16)))
}

export class HostTapFallback {
  /** The kernel's MAC on the TAP (and on the wire). */
  readonly mac: Uint8Array
  /** The kernel's addresses on the TAP (CIDR text). */
  readonly addresses: readonly string[]
  private readonly restore: string[][] = []
  private closed = false

  private constructor(
    readonly port: NexusPort,
    private readonly options: HostTapOptions,
    mac: Uint8Array,
  ) {
    this.mac = mac
    this.addresses = options.config.addresses
  }

  static async open(options: HostTapOptions): Promise<HostTapFallback> {
    const { openTap } = await import('../nexus/ports/tap.js')
    const { config, netns, wireInterface } = options
    const mac = config.mac !== '' ? parseMac(config.mac) : options.wireMac
    if (mac === undefined) throw new FlowstackError('RUNTIME_HOST_TAP', `${wireInterface} has no MAC to give the host TAP; set host.mac`)
    const port = await openTap({ name: config.device, netns, mtu: options.mtu, txQueueLen: 4096, vnetHdr: false })
    const tap = new HostTapFallback(port, options, mac)
    try {
      tap.plumb()
    } catch (err) {
      await tap.close()
      throw err
    }
    return tap
  }

  private plumb(): void {
    const { config, netns, wireInterface } = this.options
    const device = this.port.info.name
    must(netns, ['ip', 'link', 'set', 'dev', device, 'address', formatMac(this.mac)], `set the MAC of ${device}`)
    must(netns, ['ip', 'link', 'set', 'dev', device, 'up'], `bring ${device} up`)
    // Stop the kernel's stack on the owned interface (see the header).
    must(netns, ['ip', 'link', 'set', 'dev', wireInterface, 'arp', 'off'], `set ${wireInterface} NOARP`)
    this.restore.push(['ip', 'link', 'set', 'dev', wireInterface, 'arp', 'on'])
    for (const [key, value] of [
      [`net/ipv4/conf/${wireInterface}/rp_filter`, '1'],
      [`net/ipv6/conf/${wireInterface}/disable_ipv6`, '1'],
    ] as const) {
      const before = readSysctl(netns, key)
      if (before === value) continue
      // A kernel without IPv6 has no such key: nothing to silence then.
      if (run(netns, ['sysctl', '-qw', `${key}=${value}`]) === '' && before !== '') this.restore.push(['sysctl', '-qw', `${key}=${before}`])
    }
    // rp_filter takes the larger of "all" and the interface's value; "all" is left as it is.
    for (const address of config.addresses) {
      const family = address.includes(':') ? '-6' : '-4'
      // The address may not be on the owned interface (already moved, or never there).
      if (run(netns, ['ip', family, 'addr', 'del', address, 'dev', wireInterface]) === '') {
        this.restore.push(['ip', family, 'addr', 'add', address, 'dev', wireInterface])
      }
      const args = ['ip', family, 'addr', 'add', address, 'dev', device]
      if (family === '-6') args.push('nodad') // it was the kernel's already
      const failed = run(netns, args)
      if (failed !== '' && !failed.includes('File exists')) throw new FlowstackError('RUNTIME_HOST_TAP', `cannot add ${address} to ${device}: ${failed}`)
    }
  }

  /**
   * The commands close() runs after closing the TAP, led by deleting the TAP
   * itself (for a caller that cannot close its descriptor: the worker that
   * held it is gone). Read it after open.
   */
  restorePlan(): HostRestorePlan {
    const commands = [['ip', 'link', 'del', 'dev', this.port.info.name], ...[...this.restore].reverse()]
    return { ...(this.options.netns !== undefined ? { netns: this.options.netns } : {}), commands }
  }

  /** Closes the TAP (its addresses go with it) and gives the owned interface back to the kernel. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.port.close().catch(() => {})
    runRestorePlan({ ...(this.options.netns !== undefined ? { netns: this.options.netns } : {}), commands: [...this.restore].reverse() })
  }
}
