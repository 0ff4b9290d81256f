// Checks a parsed JSON value against a protobuf message descriptor the way
// ProtoJSON reads it, but collects every problem with its path instead of
// stopping at the first (protobuf-es's fromJson throws once). The loader
// runs fromJson only on input this accepts.
import { ScalarType, type DescField, type DescMessage, type DescEnum } from '@bufbuild/protobuf'

export interface ConfigProblem {
  path: string
  message: string
}

const INT32_MIN = -2147483648
const INT32_MAX = 2147483647
const UINT32_MAX = 4294967295

export function joinPath(base: string, key: string | number): string {
  if (typeof key === 'number') return `${base}[${key}]`
  return base === '' ? key : `${base}.${key}`
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)
  return String(value)
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1))
      diagonal = above
    }
  }
  return row[b.length]
}

function suggestion(name: string, candidates: string[]): string {
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of candidates) {
    const d = editDistance(name, candidate)
    if (d < bestDistance) {
      bestDistance = d
      best = candidate
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? ` (did you mean "${best}"?)` : ''
}

const WELL_KNOWN_ANY_JSON = new Set(['google.protobuf.Struct', 'google.protobuf.Value', 'google.protobuf.ListValue'])

export function checkMessageJson(value: unknown, message: DescMessage, path: string, problems: ConfigProblem[]): void {
  if (message.typeName === 'google.protobuf.Struct') {
    if (value !== null && (typeof value !== 'object' || Array.isArray(value))) problems.push({ path, message: `expected an object, got ${describe(value)}` })
    return
  }
  if (WELL_KNOWN_ANY_JSON.has(message.typeName)) return
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    problems.push({ path, message: `expected an object, got ${describe(value)}` })
    return
  }
  const byName = new Map<string, DescField>()
  for (const field of message.fields) {
    byName.set(field.jsonName, field)
    byName.set(field.name, field)
  }
  const oneofSeen = new Map<string, string>()
  for (const [key, fieldValue] of Object.entries(value as Record<string, unknown>)) {
    const fieldPath = joinPath(path, key)
    const field = byName.get(key)
    if (field === undefined) {
      problems.push({ path: fieldPath, message: `unknown field${suggestion(key, message.fields.map((f) => f.jsonName))}` })
      continue
    }
    if (fieldValue === null) continue
    if (field.oneof !== undefined) {
      const other = oneofSeen.get(field.oneof.name)
      if (other !== undefined) {
        problems.push({ path: fieldPath, message: `only one of ${field.oneof.fields.map((f) => f.jsonName).join(', ')} may be set (also got ${other})` })
        continue
      }
      oneofSeen.set(field.oneof.name, key)
    }
    checkFieldJson(fieldValue, field, fieldPath, problems)
  }
}

function checkFieldJson(value: unknown, field: DescField, path: string, problems: ConfigProblem[]): void {
  switch (field.fieldKind) {
    case 'scalar':
      checkScalar(value, field.scalar, path, problems)
      return
    case 'enum':
      checkEnum(value, field.enum, path, problems)
      return
    case 'message':
      checkMessageJson(value, field.message, path, problems)
      return
    case 'list': {
      if (!Array.isArray(value)) {
        problems.push({ path, message: `expected an array, got ${describe(value)}` })
        return
      }
      value.forEach((item, i) => {
        const itemPath = joinPath(path, i)
        if (field.listKind === 'scalar') checkScalar(item, field.scalar, itemPath, problems)
        else if (field.listKind === 'enum') checkEnum(item, field.enum, itemPath, problems)
        else checkMessageJson(item, field.message, itemPath, problems)
      })
      return
    }
    case 'map': {
      if (typeof value !== 'object' || Array.isArray(value)) {
        problems.push({ path, message: `expected an object, got ${describe(value)}` })
        return
      }
      for (const [k, item] of Object.entries(value as Record<string, unknown>)) {
        const itemPath = joinPath(path, k)
        if (field.mapKind === 'scalar') checkScalar(item, field.scalar, itemPath, problems)
        else if (field.mapKind === 'enum') checkEnum(item, field.enum, itemPath, problems)
        else checkMessageJson(item, field.message, itemPath, problems)
      }
      return
    }
  }
}

function checkEnum(value: unknown, desc: DescEnum, path: string, problems: ConfigProblem[]): void {
  const names = desc.values.filter((v) => v.number !== 0).map((v) => v.name)
  if (typeof value === 'string') {
    if (!desc.values.some((v) => v.name === value)) problems.push({ path, message: `${describe(value)} is not one of ${names.join(', ')}` })
    return
  }
  if (typeof value === 'number' && desc.values.some((v) => v.number === value)) return
  problems.push({ path, message: `${describe(value)} is not one of ${names.join(', ')}` })
}

function integerValue(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) ? value : undefined
  if (typeof value === 'string' && /^-?[0-9]+$/.test(value)) return Number(value)
  return undefined
}

function checkScalar(value: unknown, type: ScalarType, path: string, problems: ConfigProblem[]): void {
  switch (type) {
    case ScalarType.STRING:
      if (typeof value !== 'string') problems.push({ path, message: `expected a string, got ${describe(value)}` })
      return
    case ScalarType.BOOL:
      if (typeof value !== 'boolean') problems.push({ path, message: `expected true or false, got ${describe(value)}` })
      return
    case ScalarType.BYTES:
      if (typeof value !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(value)) problems.push({ path, message: `expected base64 bytes, got ${describe(value)}` })
      return
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      if (typeof value === 'number' && Number.isFinite(value)) return
      if (typeof value === 'string' && (value === 'NaN' || value === 'Infinity' || value === '-Infinity' || (value.trim() !== '' && Number.isFinite(Number(value))))) return
      problems.push({ path, message: `expected a number, got ${describe(value)}` })
      return
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32: {
      const n = integerValue(value)
      if (n === undefined || n < INT32_MIN || n > INT32_MAX) problems.push({ path, message: `expected a 32-bit integer, got ${describe(value)}` })
      return
    }
    case ScalarType.UINT32:
    case ScalarType.FIXED32: {
      const n = integerValue(value)
      if (n === undefined || n < 0 || n > UINT32_MAX) problems.push({ path, message: `expected a non-negative 32-bit integer, got ${describe(value)}` })
      return
    }
    default: {
      // 64-bit integers: numbers or decimal strings.
      const n = integerValue(value)
      if (n === undefined) problems.push({ path, message: `expected an integer, got ${describe(value)}` })
      return
    }
  }
}
