import type { Agent } from 'node:http'

/**
 * The arguments of http(s).request/get with `agent` defaulted to the stack's
 * own agent: into the options object when there is one (`request(options)`,
 * `request(url, options)`), else as a new options object after the URL.
 */
export function withDefaultAgent(args: unknown[], agent: Agent): unknown[] {
  const out = [...args]
  const optionsIndex = typeof out[0] === 'object' && out[0] !== null && !(out[0] instanceof URL) ? 0 : typeof out[1] === 'object' && out[1] !== null ? 1 : -1
  if (optionsIndex === -1) out.splice(1, 0, { agent })
  else out[optionsIndex] = { agent, ...(out[optionsIndex] as object) }
  return out
}
