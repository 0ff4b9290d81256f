import { constants as osConstants } from 'node:os'

/**
 * Every error flowstack throws or emits carries a stable string `code`, like
 * Node's own (`err.code === 'ECONNREFUSED'`) and undici's (`UND_ERR_*`). Codes
 * that Node also uses keep Node's meaning and gain `errno` and `syscall`, so
 * code written against `node:net` handles our sockets unchanged.
 */
export class FlowstackError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'FlowstackError'
    this.code = code
  }
}

export interface SystemErrorDetails {
  syscall: string
  address?: string
  port?: number
  message?: string
}

/**
 * An error shaped like the ones `node:net` emits (see `lib/internal/errors.js`
 * `UVExceptionWithHostPort`): `code` is the errno name, `errno` its negative
 * number, `syscall` the operation, and `address`/`port` when known.
 */
export interface StackSystemError extends Error {
  code: string
  errno: number
  syscall: string
  address?: string
  port?: number
}

export function systemError(code: keyof typeof osConstants.errno | string, details: SystemErrorDetails): StackSystemError {
  const errnoTable = osConstants.errno as Record<string, number>
  const errno = errnoTable[code] !== undefined ? -errnoTable[code] : -1
  let where = ''
  if (details.address !== undefined) {
    where = details.port !== undefined ? ` ${details.address}:${details.port}` : ` ${details.address}`
  }
  const err = new Error(details.message ?? `${details.syscall} ${code}${where}`) as StackSystemError
  err.code = code
  err.errno = errno
  err.syscall = details.syscall
  if (details.address !== undefined) err.address = details.address
  if (details.port !== undefined) err.port = details.port
  return err
}
