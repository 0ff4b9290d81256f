// Public surface of the flow classifier.
export * from './key.js'
export * from './table.js'
export * from './extract.js'
export * from './rules.js'
export * from './classifier.js'
export * from './build.js'
export * from './replay.js'
export * from './linear.js'
