// The switch worker's entry (DESIGN.md §2): hosts the DataPath (ports, host
// TAPs, classifier, switch loop) and answers the runtime's control messages
// (switch-protocol.ts). Started by SwitchHost (switch-host.ts).
//
// An unknown message is a protocol violation between two halves of one
// program: it is thrown, the worker dies, and the runtime stops with that
// reason (rather than guessing). Anything the loop throws ends the worker
// the same way; the addon's environment cleanup hook stops the I/O threads
// of ports still open.
import { parentPort } from 'node:worker_threads'
import { subscribe } from 'node:diagnostics_channel'
import { fromBinary } from '@bufbuild/protobuf'
import { ConfigSchema } from '../proto/gen/flowstack_pb.js'
import { FlowstackError } from '../common/errors.js'
import { DataPath } from './data-path.js'
import type { FromSwitch, SwitchAnswers, SwitchRequest, ToSwitch } from './switch-protocol.js'

if (parentPort === null) throw new FlowstackError('RUNTIME_SWITCH_NOT_WORKER', 'switch-worker.js runs as a worker thread (see SwitchHost)')
const control = parentPort
let path: DataPath | undefined

function post(message: FromSwitch): void {
  control.postMessage(message)
}

// A memory wire's pump that throws stops that wire and says so only here:
// tell the runtime, whose log is the operator's.
subscribe('flowstack:memory:pump-error', (message) => {
  const { port, error } = message as { port?: { linkType?: string }; error?: unknown }
  post({ type: 'log', level: 'error', message: `a memory wire pump stopped (${port?.linkType ?? '?'} link): ${(error as Error)?.message ?? String(error)}` })
})

function running(): DataPath {
  if (path === undefined) throw new FlowstackError('RUNTIME_SWITCH_NOT_STARTED', 'the switch has not been started')
  return path
}

async function answer(request: SwitchRequest): Promise<SwitchAnswers[SwitchRequest['type']]> {
  switch (request.type) {
    case 'start':
      if (path !== undefined) throw new FlowstackError('RUNTIME_SWITCH_STARTED', 'the switch is already started')
      path = await DataPath.start(fromBinary(ConfigSchema, request.config), request.netns, {
        fault: (instance, generation, reason) => post({ type: 'fault', instance, generation, reason }),
      })
      return path.describe()
    case 'detach':
      return running().detach(request.instance, request.reset)
    case 'barrier':
      return null
    case 'reload':
      return { generation: running().reload(fromBinary(ConfigSchema, request.config)) }
    case 'stat':
      return running().statAnswer()
    case 'flows':
      return running().flows(request.owner, request.limit)
    case 'stop':
      return running().stop()
    case 'release':
      return running().release()
    default:
      throw new FlowstackError('RUNTIME_SWITCH_PROTOCOL', `unknown switch request ${JSON.stringify((request as { type?: unknown }).type)}`)
  }
}

control.on('message', (message: ToSwitch) => {
  if ('id' in message) {
    const id = message.id
    answer(message).then(
      (value) => {
        post({ type: 'answer', id, ok: true, value })
        // The last request: nothing is left open, let the thread end by itself.
        if (message.type === 'release') control.close()
      },
      (err: unknown) => {
        // Our own codes (PORT_*, NEXUS_*, RUNTIME_*, ...) and Node's ERR_* pass; anything else (a bare
        // errno, a thrown non-Error) becomes RUNTIME_SWITCH_FAILED with its text kept in the message.
        const code = (err as { code?: unknown } | null)?.code
        const stable = typeof code === 'string' && /^(PORT|NEXUS|RUNTIME|CHANNEL|CONFIG|CONTROL|IMPAIR|PCAP|ERR)_[A-Z_]+$/.test(code)
        const text = err instanceof Error ? err.message : String(err)
        post({ type: 'answer', id, ok: false, code: stable ? code : 'RUNTIME_SWITCH_FAILED', message: stable || typeof code !== 'string' ? text : `${code}: ${text}` })
      },
    )
    return
  }
  switch (message.type) {
    case 'attach':
      running().attach(message.instance, message.generation, message.channel)
      break
    case 'listen':
    case 'unlisten':
      running().listen(message.instance, message.type === 'listen', message.ipVersion, message.localAddress, message.localPort)
      break
    case 'reconcile':
      running().reconcile(message.instance, message.open, message.graceMs)
      break
    default:
      throw new FlowstackError('RUNTIME_SWITCH_PROTOCOL', `unknown switch message ${JSON.stringify((message as { type?: unknown }).type)}`)
  }
})
