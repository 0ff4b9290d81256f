// The control socket's own behaviour, with a stand-in runtime: closing it
// ends idle clients at once and answers in flight first.
import { afterAll, describe, expect, it } from 'vitest'
import { once } from 'node:events'
import { createConnection } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { create } from '@bufbuild/protobuf'
import { controlRequest, serveControl } from '../../runtime/control.js'
import { StatResponseSchema, type StatResponse } from '../../proto/gen/flowstack_pb.js'
import type { Runtime } from '../../runtime/runtime.js'

const dir = mkdtempSync(join(tmpdir(), 'fs-control-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('control socket', () => {
  it('on close: an idle client is ended at once, a request in flight still gets its answer', async () => {
    let answerStat: (stat: StatResponse) => void = () => {}
    const runtime = { stat: () => new Promise<StatResponse>((resolve) => (answerStat = resolve)) } as unknown as Runtime
    const path = join(dir, 'ctl.sock')
    const server = await serveControl(runtime, path)
    const idle = createConnection(path)
    await once(idle, 'connect')
    const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()))
    idle.on('error', () => {})
    const asked = controlRequest(path, { request: { case: 'stat', value: {} } }, 5000)
    await new Promise((resolve) => setTimeout(resolve, 50)) // the request has arrived
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    await idleClosed
    answerStat(create(StatResponseSchema, { instances: [{ name: 'answered' }] }))
    const response = await asked
    expect(response.response.case).toBe('stat')
    expect((response.response.value as StatResponse).instances[0].name).toBe('answered')
    await closed
  })
})
