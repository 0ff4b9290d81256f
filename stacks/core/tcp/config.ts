import { NewReno, newReno } from './congestion/newreno.js'
import type { CongestionControlFactory } from './congestion/types.js'
import type { KeepAliveOptions, TcpConfig, TcpOutput } from './types.js'
import { TcpError } from './types.js'

/** TcpConfig with every default filled in and every bound checked. */
export interface ResolvedTcpConfig {
  secret: Uint8Array
  random: () => number
  clock: () => number
  output: TcpOutput
  mslMs: number
  sendBufferSize: number
  receiveBufferSize: number
  delayedAckMs: number
  initialRtoMs: number
  minRtoMs: number
  maxRtoMs: number
  synRetries: number
  maxRetransmits: number
  userTimeoutMs: number
  keepAlive: KeepAliveOptions
  challengeAckLimit: number
  windowScaling: boolean
  timestamps: boolean
  sack: boolean
  congestionControl: CongestionControlFactory
  /** 0 = from the path MTU. */
  mss: number
  noDelay: boolean
  ephemeralPortMin: number
  ephemeralPortMax: number
  maxReorderRanges: number
}

function positive(name: string, value: number, min: number, max: number): number {
  if (!Number.isFinite(value) || value < min || value > max) throw new TcpError('ERR_TCP_CONFIG', `${name} must be in [${min}, ${max}], got ${value}`)
  return value
}

export function resolveKeepAlive(base: KeepAliveOptions, o: Partial<KeepAliveOptions> | undefined): KeepAliveOptions {
  const k = { ...base, ...(o ?? {}) }
  positive('keepAlive.idleMs', k.idleMs, 1, 2 ** 31)
  positive('keepAlive.intervalMs', k.intervalMs, 1, 2 ** 31)
  positive('keepAlive.count', k.count, 1, 1000)
  return k
}

/** NewReno with RFC 6928's initial window, or with `initialWindow` segments. */
function congestionDefault(initialWindow: number): CongestionControlFactory {
  return initialWindow === 0 ? newReno : () => new NewReno(initialWindow)
}

export function resolveConfig(c: TcpConfig): ResolvedTcpConfig {
  if (!(c.secret instanceof Uint8Array) || c.secret.length !== 16) throw new TcpError('ERR_TCP_CONFIG', 'secret must be 16 bytes')
  const minRtoMs = positive('minRtoMs', c.minRtoMs ?? 200, 1, 60_000)
  return {
    secret: c.secret,
    random: c.random,
    clock: c.clock,
    output: c.output,
    // RFC 9293 3.4.2 (MSL) — TIME-WAIT is never zero: MSL has a floor of 1 ms.
    mslMs: positive('mslMs', c.mslMs ?? 30_000, 1, 600_000),
    sendBufferSize: positive('sendBufferSize', c.sendBufferSize ?? 256 * 1024, 1024, 1 << 30),
    receiveBufferSize: positive('receiveBufferSize', c.receiveBufferSize ?? 256 * 1024, 1024, 1 << 30),
    // RFC 5681 §4.2: "an ACK SHOULD be generated ... within 500 ms"; the task bound is 200 ms.
    delayedAckMs: positive('delayedAckMs', c.delayedAckMs ?? 40, 1, 200),
    initialRtoMs: positive('initialRtoMs', c.initialRtoMs ?? 1000, minRtoMs, 120_000),
    minRtoMs,
    maxRtoMs: positive('maxRtoMs', c.maxRtoMs ?? 60_000, minRtoMs, 600_000),
    synRetries: positive('synRetries', c.synRetries ?? 6, 0, 100),
    maxRetransmits: positive('maxRetransmits', c.maxRetransmits ?? 15, 1, 100),
    userTimeoutMs: positive('userTimeoutMs', c.userTimeoutMs ?? 0, 0, 2 ** 31),
    keepAlive: resolveKeepAlive({ enabled: false, idleMs: 7_200_000, intervalMs: 75_000, count: 9 }, c.keepAlive),
    challengeAckLimit: positive('challengeAckLimit', c.challengeAckLimit ?? 1000, 1, 1e9),
    windowScaling: c.windowScaling ?? true,
    timestamps: c.timestamps ?? true,
    sack: c.sack ?? true,
    congestionControl: c.congestionControl ?? congestionDefault(positive('initialWindow', c.initialWindow ?? 0, 0, 1000)),
    // The config loader's bounds (flowstack.proto TcpSettings.mss).
    mss: c.mss === undefined || c.mss === 0 ? 0 : positive('mss', c.mss, 88, 65495),
    noDelay: c.noDelay ?? false,
    ephemeralPortMin: positive('ephemeralPortMin', c.ephemeralPortMin ?? 49152, 1, 65535),
    ephemeralPortMax: positive('ephemeralPortMax', c.ephemeralPortMax ?? 65535, c.ephemeralPortMin ?? 49152, 65535),
    maxReorderRanges: positive('maxReorderRanges', c.maxReorderRanges ?? 32, 1, 1024),
  }
}
