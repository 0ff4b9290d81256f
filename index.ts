// Public entry point of the `flowstack` package. Each area re-exports its own
// public surface from its index; this file only gathers them.
export * from './common/errors.js'
