export type { CongestionControl, CongestionControlFactory } from './types.js'
export { NewReno, newReno } from './newreno.js'
