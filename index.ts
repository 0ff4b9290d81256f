// Public entry point of the `flowstack` package. Each area re-exports its own
// public surface from its index; this file only gathers them.
export * from './common/errors.js'

// A stack in the calling thread, on any port (DESIGN.md §4).
export { createStack, type CreateStackOptions, type Stack, type StackHttp, type StackStats } from './stacks/sockets/stack.js'
export { type StackDgram } from './stacks/sockets/stack.js'
export { UdpSocket, createUdpSocket, type RemoteInfo, type UdpSocketOptions, type UdpSocketType } from './stacks/sockets/udp.js'
export {
  loadTlsDefaults,
  TlsConfigError,
  keyLogErrorChannel,
  type TlsDefaults,
  type StackTls,
  type StackHttps,
  type StackTlsConnectOptions,
  type StackTlsServerOptions,
} from './stacks/sockets/tls.js'
export { StackSocket, StackServer, type StackNet, type StackConnectOptions, type StackSocketOptions, type StackServerOptions, type ListenOptions, type SocketAddressInfo } from './stacks/sockets/net.js'

// Ports and middleware (DESIGN.md §2).
export * from './nexus/ports/index.js'
export * from './nexus/middleware/index.js'

// The pure stack core, for simulations and tools that drive a stack by hand.
export { createStackCore, StackCore, type StackCoreOptions, type RouteSpec } from './stacks/core/stack.js'

// Lower layers, for tools and tests that work with packets directly.
export * as wire from './stacks/wire/index.js'
export * as channel from './nexus/channel/index.js'
export * as classifier from './classifier/index.js'
export * as config from './runtime/config/index.js'

// The runtime (DESIGN.md §2, §5) from code: Runtime.start(await config.loadConfig(file)).
// The switch runs in its own worker and instances in theirs, so stat() and flows() are async.
export { Runtime, type RuntimeOptions, type RuntimeLog, type MemoryWirePool } from './runtime/runtime.js'
export { serveControl } from './runtime/control.js'
