// An instance's TLS identity and policy (DESIGN.md §4), as plain data the
// runtime fills from `flowstack.v1.Tls` in the config, and the loader that
// turns that message into it: files read, PEM parsed, key checked against the
// certificate, validity checked. Every problem is reported at once with the
// path of the field, like the config loader does.
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { FlowstackError } from '../../common/errors.js'

export type TlsMinVersion = 'TLSv1.2' | 'TLSv1.3'
/** none: never ask; request: ask, accept without one; require: refuse a client without a trusted certificate. */
export type ClientCertPolicyName = 'none' | 'request' | 'require'

export interface TlsIdentity {
  /** PEM, leaf first, then intermediates. */
  cert: string
  /** PEM private key. */
  key: string
  passphrase?: string
}

export interface TlsSniIdentity extends TlsIdentity {
  /** Server name or wildcard (`*.example.com`). */
  serverName: string
}

export interface TlsDefaults {
  /** The default certificate chain and key (servers; also offered by clients when a server asks). */
  identity?: TlsIdentity
  /** Extra certificates chosen by the client's SNI server name. */
  sni?: TlsSniIdentity[]
  /** Trusted CAs (PEM) for verifying peers; undefined = Node's default root store. */
  ca?: string[]
  /** ALPN protocols in preference order. */
  alpn?: string[]
  minVersion?: TlsMinVersion
  clientCertificates?: ClientCertPolicyName
  /** Session tickets (default on) and the ticket key rotation period (default 12 h). */
  sessionTickets?: { enabled: boolean; rotationSeconds: number }
  /** Absolute path; NSS key log lines of this instance's connections are appended to it. */
  keyLogFile?: string
}

// ------------------------------------------------------------ loader input

/** Structurally the generated `KeyPair` message (oneof cases) — no dependency on the generated code. */
export interface KeyPairLike {
  chain?: { case?: 'certFile' | 'certPem' | undefined; value?: string }
  key?: { case?: 'keyFile' | 'keyPem' | undefined; value?: string }
  passphrase?: string
}

export interface PemSourceLike {
  source?: { case?: 'file' | 'pem' | undefined; value?: string }
}

/** Structurally the generated `flowstack.v1.Tls` message; enums as numbers or their proto names. */
export interface TlsConfigLike {
  certificate?: KeyPairLike
  sni?: { serverName: string; certificate?: KeyPairLike }[]
  ca?: PemSourceLike[]
  alpn?: string[]
  minVersion?: number | string
  clientCertificates?: number | string
  sessionTickets?: { enabled?: boolean; rotationSeconds?: number }
  keyLogFile?: string
}

export interface TlsConfigProblem {
  path: string
  message: string
}

export class TlsConfigError extends FlowstackError {
  readonly problems: readonly TlsConfigProblem[]
  constructor(problems: readonly TlsConfigProblem[]) {
    super('CONFIG_INVALID', `tls: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map((p) => `${p.path}: ${p.message}`).join('\n')}`)
    this.name = 'TlsConfigError'
    this.problems = problems
  }
}

export interface LoadTlsOptions {
  /** Prefix of every problem path (default `tls`; the runtime passes `instances[2].tls`). */
  path?: string
  /** Validity is checked against this time (default now). */
  now?: Date
}

const DEFAULT_TICKET_ROTATION_SECONDS = 12 * 60 * 60

// proto enum numbers and names (TLS_VERSION_UNSPECIFIED = TLS 1.2).
const VERSIONS: Record<string, TlsMinVersion> = { 0: 'TLSv1.2', 1: 'TLSv1.2', 2: 'TLSv1.3', TLS_VERSION_UNSPECIFIED: 'TLSv1.2', TLS1_2: 'TLSv1.2', TLS1_3: 'TLSv1.3' }
const POLICIES: Record<string, ClientCertPolicyName> = {
  0: 'none',
  1: 'none',
  2: 'request',
  3: 'require',
  CLIENT_CERT_POLICY_UNSPECIFIED: 'none',
  NONE: 'none',
  REQUEST: 'request',
  REQUIRE: 'require',
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/**
 * Reads a `flowstack.v1.Tls` message into TlsDefaults. Files are resolved
 * against `baseDir` (the config file's directory). Throws TlsConfigError
 * (code CONFIG_INVALID) listing every problem with its field path.
 */
export function loadTlsDefaults(config: TlsConfigLike, baseDir: string, options: LoadTlsOptions = {}): TlsDefaults {
  const root = options.path ?? 'tls'
  const now = (options.now ?? new Date()).getTime()
  const problems: TlsConfigProblem[] = []
  const add = (path: string, message: string): void => {
    problems.push({ path, message })
  }
  const file = (path: string, name: string): string | undefined => {
    const full = isAbsolute(name) ? name : resolve(baseDir, name)
    try {
      return readFileSync(full, 'utf8')
    } catch (err) {
      add(path, `cannot read ${full}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
      return undefined
    }
  }

  const certificates = (path: string, pem: string): X509Certificate[] | undefined => {
    const blocks = pem.match(PEM_CERT)
    if (blocks === null) {
      add(path, 'no PEM certificate found')
      return undefined
    }
    const out: X509Certificate[] = []
    for (let i = 0; i < blocks.length; i++) {
      try {
        out.push(new X509Certificate(blocks[i]!))
      } catch (err) {
        add(path, `certificate ${i + 1} does not parse: ${(err as Error).message}`)
        return undefined
      }
    }
    return out
  }

  const validity = (path: string, cert: X509Certificate, what: string): void => {
    const notAfter = Date.parse(cert.validTo)
    const notBefore = Date.parse(cert.validFrom)
    if (Number.isFinite(notAfter) && notAfter < now) add(path, `${what} (${cert.subject.replace(/\n/g, ', ')}) expired on ${cert.validTo}`)
    else if (Number.isFinite(notBefore) && notBefore > now) add(path, `${what} (${cert.subject.replace(/\n/g, ', ')}) is not valid before ${cert.validFrom}`)
  }

  const keyPair = (path: string, pair: KeyPairLike | undefined): TlsIdentity | undefined => {
    if (pair === undefined) return undefined
    let cert: string | undefined
    let key: string | undefined
    const chainCase = pair.chain?.case
    const chainPath = `${path}.${chainCase ?? 'certFile'}`
    if (chainCase === 'certFile') cert = file(chainPath, pair.chain!.value ?? '')
    else if (chainCase === 'certPem') cert = pair.chain!.value ?? ''
    else add(`${path}.certFile`, 'a certificate chain (certFile or certPem) is required')
    const keyCase = pair.key?.case
    const keyPath = `${path}.${keyCase ?? 'keyFile'}`
    if (keyCase === 'keyFile') key = file(keyPath, pair.key!.value ?? '')
    else if (keyCase === 'keyPem') key = pair.key!.value ?? ''
    else add(`${path}.keyFile`, 'a private key (keyFile or keyPem) is required')
    const chain = cert !== undefined ? certificates(chainPath, cert) : undefined
    let keyObject: KeyObject | undefined
    if (key !== undefined) {
      try {
        keyObject = createPrivateKey({ key, format: 'pem', passphrase: pair.passphrase || undefined })
      } catch (err) {
        add(keyPath, `private key does not load: ${(err as Error).message}`)
      }
    }
    if (chain === undefined) return undefined
    chain.forEach((c, i) => validity(chainPath, c, i === 0 ? 'certificate' : `chain certificate ${i + 1}`))
    if (keyObject !== undefined && !chain[0]!.checkPrivateKey(keyObject)) add(keyPath, `key does not match the certificate (${chain[0]!.subject.replace(/\n/g, ', ')})`)
    if (cert === undefined || key === undefined || keyObject === undefined) return undefined
    return pair.passphrase ? { cert, key, passphrase: pair.passphrase } : { cert, key }
  }

  const out: TlsDefaults = {}
  const identity = keyPair(`${root}.certificate`, config.certificate)
  if (identity !== undefined) out.identity = identity

  const sni: TlsSniIdentity[] = []
  ;(config.sni ?? []).forEach((entry, i) => {
    const path = `${root}.sni[${i}]`
    if (!/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$/.test(entry.serverName)) add(`${path}.serverName`, `${JSON.stringify(entry.serverName)} is not a server name`)
    if (entry.certificate === undefined) {
      add(`${path}.certificate`, 'required')
      return
    }
    const pair = keyPair(`${path}.certificate`, entry.certificate)
    if (pair !== undefined) sni.push({ serverName: entry.serverName, ...pair })
  })
  if (sni.length > 0) out.sni = sni

  const ca = config.ca ?? []
  if (ca.length > 0) {
    const cas: string[] = []
    ca.forEach((source, i) => {
      const path = `${root}.ca[${i}]`
      let pem: string | undefined
      if (source.source?.case === 'file') pem = file(`${path}.file`, source.source.value ?? '')
      else if (source.source?.case === 'pem') pem = source.source.value ?? ''
      else add(`${path}.file`, 'a CA (file or pem) is required')
      if (pem === undefined) return
      const where = `${path}.${source.source!.case}`
      const certs = certificates(where, pem)
      if (certs === undefined) return
      certs.forEach((c) => validity(where, c, 'CA certificate'))
      cas.push(pem)
    })
    out.ca = cas
  }

  const alpn = config.alpn ?? []
  alpn.forEach((protocol, i) => {
    if (protocol === '' || Buffer.byteLength(protocol) > 255) add(`${root}.alpn[${i}]`, `${JSON.stringify(protocol)} is not an ALPN protocol id (1-255 bytes)`)
  })
  if (alpn.length > 0) out.alpn = [...alpn]

  if (config.minVersion !== undefined) {
    const version = VERSIONS[String(config.minVersion)]
    if (version === undefined) add(`${root}.minVersion`, `unknown TLS version ${JSON.stringify(config.minVersion)} (TLS1_2 or TLS1_3)`)
    else out.minVersion = version
  }
  if (config.clientCertificates !== undefined) {
    const policy = POLICIES[String(config.clientCertificates)]
    if (policy === undefined) add(`${root}.clientCertificates`, `unknown client certificate policy ${JSON.stringify(config.clientCertificates)} (NONE, REQUEST or REQUIRE)`)
    else out.clientCertificates = policy
  }
  if ((out.clientCertificates === 'request' || out.clientCertificates === 'require') && out.ca === undefined) {
    add(`${root}.ca`, `client certificates ${out.clientCertificates === 'require' ? 'required' : 'requested'}: the CAs that sign them must be configured`)
  }

  const tickets = config.sessionTickets
  const rotation = tickets?.rotationSeconds ?? 0
  if (!Number.isInteger(rotation) || rotation < 0) add(`${root}.sessionTickets.rotationSeconds`, `${rotation} is not a number of seconds`)
  out.sessionTickets = { enabled: tickets?.enabled ?? true, rotationSeconds: rotation > 0 ? rotation : DEFAULT_TICKET_ROTATION_SECONDS }

  if (config.keyLogFile) out.keyLogFile = isAbsolute(config.keyLogFile) ? config.keyLogFile : resolve(baseDir, config.keyLogFile)

  if (problems.length > 0) throw new TlsConfigError(problems)
  return out
}
