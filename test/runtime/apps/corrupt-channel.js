// Test app: a hostile instance. It bypasses its ChannelEnd's checks and
// publishes a TX descriptor naming a buffer outside the pool, the way a
// buggy native add-on or a memory scribble would.
export default async function corruptChannel(stack, context) {
  const txRing = stack.shell.end.outRing
  txRing.push(1 << 30, 64, 0, 0)
  txRing.publish()
  context.log('published a corrupt descriptor')
}
