// The local control socket (DESIGN.md §6): a unix socket carrying
// ControlRequest / ControlResponse messages from the schema, each framed as a
// 4-byte big-endian length followed by the binary message.
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { chmodSync, existsSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf'
import { ControlErrorSchema, ControlRequestSchema, ControlResponseSchema, type Config, type ControlRequest, type ControlResponse } from '../proto/gen/flowstack_pb.js'
import { FlowstackError } from '../common/errors.js'
import type { Runtime } from './runtime.js'

/** Largest control message accepted (a flow listing can be large). */
const MAX_FRAME = 64 * 1024 * 1024

export function defaultControlPath(config?: Config): string {
  if (config?.control !== undefined && config.control.path !== '') return config.control.path
  return join(process.env.XDG_RUNTIME_DIR ?? tmpdir(), 'flowstack.sock')
}

/** Splits a byte stream into frames; calls onFrame for each. Returns false once a frame is too large. */
function frameReader(onFrame: (frame: Uint8Array) => void, onBad: (message: string) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0)
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    while (pending.length >= 4) {
      const length = pending.readUInt32BE(0)
      if (length > MAX_FRAME) {
        onBad(`control frame of ${length} bytes exceeds ${MAX_FRAME}`)
        pending = Buffer.alloc(0)
        return
      }
      if (pending.length < 4 + length) return
      const frame = pending.subarray(4, 4 + length)
      pending = pending.subarray(4 + length)
      onFrame(frame)
    }
  }
}

function frame(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + bytes.length)
  out.writeUInt32BE(bytes.length, 0)
  out.set(bytes, 4)
  return out
}

async function answer(runtime: Runtime, request: ControlRequest): Promise<ControlResponse> {
  const id = request.id
  switch (request.request.case) {
    case 'stat':
      return create(ControlResponseSchema, { id, response: { case: 'stat', value: await runtime.stat() } })
    case 'flows':
      return create(ControlResponseSchema, { id, response: { case: 'flows', value: await runtime.flows(request.request.value.owner, request.request.value.limit) } })
    case 'reload':
      return create(ControlResponseSchema, { id, response: { case: 'reload', value: await runtime.reload(request.request.value.configPath) } })
    default:
      return create(ControlResponseSchema, {
        id,
        response: { case: 'error', value: create(ControlErrorSchema, { code: 'CONTROL_UNSUPPORTED', message: `request ${request.request.case ?? '(empty)'} is not served` }) },
      })
  }
}

/** Serves the control socket; a stale socket file left by a dead runtime is replaced, a live one refused. */
export async function serveControl(runtime: Runtime, path: string, mode = 0o600): Promise<Server> {
  if (existsSync(path)) {
    const alive = await new Promise<boolean>((resolve) => {
      const probe = createConnection(path)
      probe.once('connect', () => {
        probe.destroy()
        resolve(true)
      })
      probe.once('error', () => resolve(false))
    })
    if (alive) throw new FlowstackError('CONTROL_IN_USE', `another runtime serves ${path}`)
    unlinkSync(path)
  }
  // Per connection: requests still being answered.
  const connections = new Map<Socket, number>()
  let closing = false
  /** After an answer: a closing server ends a connection once nothing is pending on it. */
  const settled = (socket: Socket): void => {
    const pending = (connections.get(socket) ?? 1) - 1
    connections.set(socket, pending)
    if (closing && pending === 0) socket.end()
  }
  const server = createServer((socket: Socket) => {
    connections.set(socket, 0)
    socket.once('close', () => connections.delete(socket))
    socket.on('error', () => {})
    socket.on(
      'data',
      frameReader(
        (bytes) => {
          let request: ControlRequest
          try {
            request = fromBinary(ControlRequestSchema, bytes)
          } catch (err) {
            const response = create(ControlResponseSchema, { response: { case: 'error', value: create(ControlErrorSchema, { code: 'CONTROL_BAD_REQUEST', message: (err as Error).message }) } })
            socket.write(frame(toBinary(ControlResponseSchema, response)))
            return
          }
          connections.set(socket, (connections.get(socket) ?? 0) + 1)
          answer(runtime, request)
            .then(
              (response) => socket.write(frame(toBinary(ControlResponseSchema, response))),
              (err: unknown) => {
                const code = (err as { code?: string }).code ?? 'CONTROL_FAILED'
                const response = create(ControlResponseSchema, { id: request.id, response: { case: 'error', value: create(ControlErrorSchema, { code, message: String((err as Error).message ?? err) }) } })
                socket.write(frame(toBinary(ControlResponseSchema, response)))
              },
            )
            .finally(() => settled(socket))
        },
        () => socket.destroy(),
      ),
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => resolve())
  })
  chmodSync(path, mode === 0 ? 0o600 : mode)
  // net.Server.close() waits for every connection to end, and a client may
  // keep one open and idle (a monitoring agent, `nc -U`): closing the control
  // socket ends idle connections at once and the others once their answers
  // are written, so a stopping runtime is never held up by a client.
  const closeServer = server.close.bind(server)
  server.close = ((callback?: (err?: Error) => void) => {
    closing = true
    closeServer(callback)
    for (const [socket, pending] of connections) if (pending === 0) socket.destroy()
    return server
  }) as Server['close']
  server.on('close', () => {
    try {
      unlinkSync(path)
    } catch {
      // already gone
    }
  })
  return server
}

let nextId = 1

/** Sends one request and resolves with its response; CONTROL_UNREACHABLE when no runtime listens. */
export function controlRequest(path: string, request: MessageInitShape<typeof ControlRequestSchema>, timeoutMs = 10000): Promise<ControlResponse> {
  const message = create(ControlRequestSchema, request)
  message.id = nextId++
  const bytes = toBinary(ControlRequestSchema, message)
  return new Promise((resolve, reject) => {
    const socket = createConnection(path)
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new FlowstackError('CONTROL_TIMEOUT', `no answer from ${path} in ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once('connect', () => socket.write(frame(bytes)))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      reject(new FlowstackError('CONTROL_UNREACHABLE', `no flowstack runtime at ${path} (${err.code ?? err.message})`, { cause: err }))
    })
    socket.on(
      'data',
      frameReader(
        (frameBytes) => {
          clearTimeout(timer)
          socket.end()
          try {
            resolve(fromBinary(ControlResponseSchema, frameBytes))
          } catch (err) {
            reject(new FlowstackError('CONTROL_BAD_RESPONSE', (err as Error).message))
          }
        },
        (message) => {
          clearTimeout(timer)
          socket.destroy()
          reject(new FlowstackError('CONTROL_BAD_RESPONSE', message))
        },
      ),
    )
  })
}
