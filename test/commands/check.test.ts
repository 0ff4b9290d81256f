import { PassThrough } from 'node:stream'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { checkCommand } from '../../runtime/commands/check.js'

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough()
  const chunks: Buffer[] = []
  stream.on('data', (c: Buffer) => chunks.push(c))
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') }
}

const scratch = mkdtempSync(join(tmpdir(), 'fs-check-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe('flowstack check', () => {
  it('exits 0 with a summary of ports, instances and rules', async () => {
    const out = capture()
    const err = capture()
    const file = new URL('../../examples/demo.json', import.meta.url).pathname
    expect(await checkCommand(file, { stdout: out.stream, stderr: err.stream })).toBe(0)
    const text = out.text()
    expect(text).toContain(`${file}: OK`)
    expect(text).toMatch(/ports \(1\):\n  wire0\s+memory wire demo, default kernel/)
    expect(text).toMatch(/instances \(2\):\n  web\s+on wire0, 198\.51\.100\.2\/24 2001:db8::2\/64\n  client/)
    expect(text).toMatch(/rules \(4, \d+ distinct masks\), highest priority first:\n\s+100 drop-blocked\s+remote 203\.0\.113\.0\/24 -> drop\n\s+20 admin-to-kernel/)
    expect(err.text()).toBe('')
  })

  it('exits 1 with every problem, one per line', async () => {
    const file = join(scratch, 'bad.json')
    writeFileSync(
      file,
      JSON.stringify({
        ports: [{ name: 'wire0', tun: { device: 'fs0' } }],
        instances: [{ name: 'web', port: 'wire0', addresses: ['198.51.100.300/24'] }],
        rules: [{ name: 'r', match: { localPorts: { from: 1, to: 70000 } }, action: { instance: 'api' } }],
      }),
    )
    const out = capture()
    const err = capture()
    expect(await checkCommand(file, { stdout: out.stream, stderr: err.stream })).toBe(1)
    expect(err.text()).toBe(
      [
        'instances[0].addresses[0]: "198.51.100.300/24" is not a CIDR prefix',
        'rules[0].action.instance: no instance named "api"',
        'rules[0].match.localPorts.to: 70000 is not a port number',
        '',
      ].join('\n'),
    )
    expect(out.text()).toBe('')
  })
})
