// The runtime's handle on the switch worker (switch-worker.ts): typed
// requests with an id and a timeout, one-way messages in order, and the
// worker's faults and death as callbacks. Every await on the worker is
// bounded: a worker that dies rejects what is pending with
// RUNTIME_SWITCH_DIED, one that stops answering with RUNTIME_SWITCH_TIMEOUT.
import type { Worker } from 'node:worker_threads'
import { startWorker } from '../common/worker-url.js'
import { FlowstackError } from '../common/errors.js'
import type { ConnectionReport } from './host/messages.js'
import type { DetachAnswer, FromSwitch, SwitchAnswers, SwitchOneWay, SwitchRequest } from './switch-protocol.js'

/** Default bound on a request (ms); `start` gets its own (opening devices runs `ip`). */
const REQUEST_TIMEOUT_MS = 10000
/** How long a released worker may take to end by itself before it is terminated (ms). */
const EXIT_TIMEOUT_MS = 2000

type Pending = { resolve: (value: unknown) => void; reject: (err: Error) => void; timer: NodeJS.Timeout; type: string }

/** What an instance host needs from the switch (implemented by SwitchHost). */
export interface InstanceDataPath {
  /** A fresh channel for the instance (side A goes to the switch); `generation` names it in faults. */
  attach(instance: number, generation: number, channel: SharedArrayBuffer): void
  /** Stops serving the instance and releases its flows; with `reset`, its TCP peers are reset on its behalf first. */
  detach(instance: number, reset: boolean): Promise<DetachAnswer>
  listen(instance: number, open: boolean, ipVersion: 4 | 6, localAddress: string, localPort: number): void
  reconcile(instance: number, open: ConnectionReport[], graceMs: number): void
  /** Resolves once every earlier call has been applied by the switch. */
  barrier(): Promise<void>
}

export interface SwitchHostEvents {
  /** The switch found an instance's channel corrupt. */
  fault?: (instance: number, generation: number, reason: string) => void
  log?: (level: 'info' | 'warn' | 'error', message: string) => void
  /** The worker died (threw, or exited unasked); called once. */
  death?: (reason: string) => void
}

export class SwitchHost implements InstanceDataPath {
  private readonly worker: Worker
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  /** Set once the worker is gone; later requests reject at once. */
  private deadReason: string | undefined
  private thrown: string | undefined
  private released = false
  private readonly exited: Promise<number>

  constructor(private readonly events: SwitchHostEvents = {}) {
    this.worker = startWorker('./switch-worker.js', import.meta.url, { name: 'flowstack-switch' })
    this.worker.on('message', (message: FromSwitch) => this.onMessage(message))
    this.worker.on('error', (err: Error) => {
      this.thrown = `${err.name}: ${err.message}`
    })
    this.worker.on('messageerror', (err: Error) => {
      this.thrown = `undecodable message from the switch: ${err.message}`
    })
    this.exited = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        const reason = this.thrown ?? `the switch worker exited with code ${code}`
        this.deadReason = reason
        for (const [, pending] of this.pending) {
          clearTimeout(pending.timer)
          pending.reject(new FlowstackError('RUNTIME_SWITCH_DIED', `switch worker died during ${pending.type}: ${reason}`))
        }
        this.pending.clear()
        if (!this.released) this.events.death?.(reason)
        resolve(code)
      })
    })
  }

  /** The worker's thread id (diagnostics). */
  get threadId(): number {
    return this.worker.threadId
  }

  /** Why the worker is gone, or undefined while it runs. */
  get deathReason(): string | undefined {
    return this.deadReason
  }

  request<T extends SwitchRequest['type']>(request: Extract<SwitchRequest, { type: T }>, timeoutMs = REQUEST_TIMEOUT_MS): Promise<SwitchAnswers[T]> {
    if (this.deadReason !== undefined) return Promise.reject(new FlowstackError('RUNTIME_SWITCH_DIED', `switch worker is gone: ${this.deadReason}`))
    const id = this.nextId++
    return new Promise<SwitchAnswers[T]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new FlowstackError('RUNTIME_SWITCH_TIMEOUT', `the switch did not answer ${request.type} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer, type: request.type })
      this.worker.postMessage({ ...request, id })
    })
  }

  private post(message: SwitchOneWay): void {
    // After the worker is gone there is nobody to tell; the runtime is stopping.
    if (this.deadReason === undefined) this.worker.postMessage(message)
  }

  private onMessage(message: FromSwitch): void {
    switch (message.type) {
      case 'answer': {
        const pending = this.pending.get(message.id)
        if (pending === undefined) return // timed out already
        this.pending.delete(message.id)
        clearTimeout(pending.timer)
        if (message.ok) pending.resolve(message.value)
        else pending.reject(new FlowstackError(message.code, message.message))
        break
      }
      case 'fault':
        this.events.fault?.(message.instance, message.generation, message.reason)
        break
      case 'log':
        this.events.log?.(message.level, message.message)
        break
    }
  }

  attach(instance: number, generation: number, channel: SharedArrayBuffer): void {
    this.post({ type: 'attach', instance, generation, channel })
  }

  detach(instance: number, reset: boolean): Promise<DetachAnswer> {
    return this.request({ type: 'detach', instance, reset })
  }

  listen(instance: number, open: boolean, ipVersion: 4 | 6, localAddress: string, localPort: number): void {
    this.post({ type: open ? 'listen' : 'unlisten', instance, ipVersion, localAddress, localPort })
  }

  reconcile(instance: number, open: ConnectionReport[], graceMs: number): void {
    this.post({ type: 'reconcile', instance, open, graceMs })
  }

  async barrier(): Promise<void> {
    await this.request({ type: 'barrier' })
  }

  /**
   * After `release` answered: the worker ends by itself (its control port is
   * closed and nothing is open); terminated if it has not within a bound.
   */
  async close(): Promise<void> {
    this.released = true
    if (this.deadReason !== undefined) return
    const timeout = new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), EXIT_TIMEOUT_MS).unref())
    if ((await Promise.race([this.exited, timeout])) === 'late') await this.worker.terminate()
  }

  /** Ends a worker that will not be released in order (a failed start): no death callback. */
  async dispose(): Promise<void> {
    this.released = true
    if (this.deadReason === undefined) await this.worker.terminate()
    await this.exited
  }

  /**
   * Ends the worker at once, as a crash would (the addon's cleanup hook stops
   * its I/O threads). For emergency stops and tests of the runtime's
   * reaction; the death callback runs.
   */
  async terminate(): Promise<void> {
    await this.worker.terminate()
    await this.exited
  }

  /** Sends a raw message (tests: a protocol violation must end the worker, and the runtime with it). */
  postRaw(message: unknown): void {
    this.worker.postMessage(message)
  }
}
