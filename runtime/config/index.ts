// Config loading and validation (DESIGN.md §6).
export * from './load.js'
export { checkMessageJson } from './json-types.js'
export * from './demo.js'
