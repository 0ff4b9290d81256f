// Finds the offset of the first JSON syntax error (RFC 8259 grammar), because
// V8's JSON.parse messages do not always carry a position. Iterative and
// bounded by the input length.

const WS = new Set([0x20, 0x09, 0x0a, 0x0d])

/** Offset of the first syntax error in `text`, or -1 when it is valid JSON. */
export function jsonErrorOffset(text: string): number {
  let i = 0
  const n = text.length
  const skip = (): void => {
    while (i < n && WS.has(text.charCodeAt(i))) i++
  }
  const literal = (word: string): boolean => {
    if (text.startsWith(word, i)) {
      i += word.length
      return true
    }
    return false
  }
  const string = (): boolean => {
    if (text[i] !== '"') return false
    i++
    while (i < n) {
      const c = text.charCodeAt(i)
      if (c === 0x22) {
        i++
        return true
      }
      if (c < 0x20) return false
      if (c === 0x5c) {
        const e = text[i + 1]
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) return false
          i += 6
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2
        else return false
      } else i++
    }
    return false
  }
  const number = (): boolean => {
    const m = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400))
    if (m === null) return false
    i += m[0].length
    return true
  }
  // Stack of open containers: '{' or '['; `expect` says what may come next.
  const stack: string[] = []
  let expectValue = true
  skip()
  for (;;) {
    skip()
    if (expectValue) {
      const c = text[i]
      if (c === '{') {
        i++
        skip()
        if (text[i] === '}') {
          i++
          expectValue = false
        } else {
          if (!string()) return i
          skip()
          if (text[i] !== ':') return i
          i++
          stack.push('{')
        }
        continue
      }
      if (c === '[') {
        i++
        skip()
        if (text[i] === ']') {
          i++
          expectValue = false
        } else stack.push('[')
        continue
      }
      const start = i
      if (!(string() || number() || literal('true') || literal('false') || literal('null'))) return start
      expectValue = false
      continue
    }
    // After a value: close containers or continue them.
    const top = stack[stack.length - 1]
    if (top === undefined) return i < n ? i : -1
    const c = text[i]
    if (c === ',') {
      i++
      if (top === '{') {
        skip()
        if (!string()) return i
        skip()
        if (text[i] !== ':') return i
        i++
      }
      expectValue = true
    } else if ((c === '}' && top === '{') || (c === ']' && top === '[')) {
      i++
      stack.pop()
    } else return i
  }
}
