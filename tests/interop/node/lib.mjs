// Shared helpers of the interop scripts: argument parsing, an Agenda on the test's database, JSON lines.
// `--url` picks the backend: mongodb://... -> @agendajs/mongo-backend (collection `--collection`),
// postgresql://... -> @agendajs/postgres-backend (table `--table`, default agenda_jobs).
import { Agenda } from 'agenda';
import { MongoBackend } from '@agendajs/mongo-backend';
import { PostgresBackend } from '@agendajs/postgres-backend';

/** Parse `--key value` pairs (and bare `--flag`) into an object. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument: ${arg}`);
    const key = arg.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) {
      out[key] = true;
    } else {
      out[key] = next;
      i++;
    }
  }
  if (!out.url) throw new Error('--url mongodb://host:port/database (or postgresql://...) is required');
  return out;
}

/** `a=2,b=1` -> {a: 2, b: 1} */
export function parseCounts(text) {
  const out = {};
  if (!text || text === true) return out;
  for (const part of String(text).split(',')) {
    const at = part.lastIndexOf('=');
    if (at < 1) throw new Error(`expected name=count, got ${part}`);
    out[part.slice(0, at)] = Number(part.slice(at + 1));
  }
  return out;
}

/** A comma-separated list (empty string -> []). */
export function parseList(text) {
  if (!text || text === true) return [];
  return String(text).split(',').filter(Boolean);
}

/** Whether `--url` names a PostgreSQL database. */
export function isPostgres(args) {
  return /^postgres(ql)?:\/\//.test(String(args.url));
}

/** The backend `--url` names: MongoDB (`--collection`, default agendaJobs) or PostgreSQL (`--table`). */
export function makeBackend(args) {
  if (isPostgres(args)) {
    return new PostgresBackend({ connectionString: args.url, tableName: args.table || 'agenda_jobs' });
  }
  return new MongoBackend({ address: args.url, collection: args.collection || 'agendaJobs' });
}

/**
 * Where a worker records its runs, so a test can count them across processes: a MongoDB collection, or a
 * PostgreSQL table `name` holding one JSONB document per run (created here when missing).
 */
export async function makeResults(backend, args, name) {
  const repository = backend.repository;
  if (isPostgres(args)) {
    const pool = repository.getPool();
    await pool.query(`CREATE TABLE IF NOT EXISTS "${name}" (id BIGSERIAL PRIMARY KEY, doc JSONB NOT NULL)`);
    return {
      insert: async (record) => {
        await pool.query(`INSERT INTO "${name}" (doc) VALUES ($1)`, [JSON.stringify(record)]);
      },
      count: async () => Number((await pool.query(`SELECT count(*) AS n FROM "${name}"`)).rows[0].n),
    };
  }
  const collection = repository.getDb().collection(name);
  return {
    insert: async (record) => {
      await collection.insertOne(record);
    },
    count: () => collection.countDocuments({}),
  };
}

/** A connected Agenda on `--url` (see makeBackend). */
export async function makeAgenda(args, extra = {}) {
  const backend = makeBackend(args);
  const agenda = new Agenda({
    backend,
    processEvery: Number(args['process-every'] || 100),
    name: args.name || 'node-interop',
    ...extra,
  });
  agenda.on('error', (err) => emit({ event: 'error', message: String(err?.message ?? err) }, process.stderr));
  await agenda.ready;
  return { agenda, backend };
}

/** Print one JSON line (dates as ISO strings). */
export function emit(obj, stream = process.stdout) {
  stream.write(JSON.stringify(obj) + '\n');
}

/** Exit with code 3 and a message on stderr when the script runs longer than `--timeout-ms`. */
export function exitAfter(ms, describe = () => ({})) {
  const timer = setTimeout(() => {
    emit({ event: 'timeout', timeoutMs: ms, ...describe() }, process.stderr);
    process.exit(3);
  }, ms);
  timer.unref();
  return timer;
}

/** What a test needs to know about a job, as plain JSON. */
export function jobSummary(attrs) {
  return {
    id: attrs._id?.toString(),
    name: attrs.name,
    state: attrs.state,
    type: attrs.type,
    priority: attrs.priority,
    data: attrs.data,
    nextRunAt: attrs.nextRunAt ?? null,
    lockedAt: attrs.lockedAt ?? null,
    lastRunAt: attrs.lastRunAt ?? null,
    lastFinishedAt: attrs.lastFinishedAt ?? null,
    failedAt: attrs.failedAt ?? null,
    failCount: attrs.failCount ?? null,
    failReason: attrs.failReason ?? null,
    repeatInterval: attrs.repeatInterval ?? null,
    repeatTimezone: attrs.repeatTimezone ?? null,
    disabled: attrs.disabled ?? null,
    lastModifiedBy: attrs.lastModifiedBy ?? null,
    startDate: attrs.startDate ?? null,
    endDate: attrs.endDate ?? null,
    skipDays: attrs.skipDays ?? null,
  };
}
