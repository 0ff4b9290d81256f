import { describe, expect, it } from 'vitest'
import { systemError } from '../common/errors.js'

describe('systemError', () => {
  it('is shaped like a node:net error', () => {
    const err = systemError('ECONNREFUSED', { syscall: 'connect', address: '198.51.100.1', port: 80 })
    expect(err.code).toBe('ECONNREFUSED')
    expect(err.errno).toBe(-111)
    expect(err.syscall).toBe('connect')
    expect(err.message).toBe('connect ECONNREFUSED 198.51.100.1:80')
  })
})
