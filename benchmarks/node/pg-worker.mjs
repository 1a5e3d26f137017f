// A Node Agenda 6 worker on @agendajs/postgres-backend for `benchmarks/compare.py --store postgres`.
//
//   node pg-worker.mjs --url postgresql://... [--name node-w0] [--job-name bench-noop]
//        [--process-every MS] [--max-concurrency N] [--default-concurrency N]
//        [--results]           the handler inserts (lib, job_id, t0: data.t0, t1: now in ms) into bench_results
//
// Options not given keep Agenda's defaults (processEvery 5 s, maxConcurrency 20, defaultConcurrency 5).
// The backend's LISTEN/NOTIFY channel is on (its default). Prints {"event":"ready","t":<epoch ms>,"pid":N}
// once started; SIGTERM/SIGINT: Agenda's stop(), disconnect, exit 0.
import { Agenda } from 'agenda';
import { PostgresBackend } from '@agendajs/postgres-backend';
import { parseArgs, emit } from './lib.mjs';

const args = parseArgs();
const jobName = args['job-name'] || 'bench-noop';
const backend = new PostgresBackend({ connectionString: args.url });
const config = { backend, name: args.name || 'node-bench' };
if (args['process-every']) config.processEvery = Number(args['process-every']);
if (args['max-concurrency']) config.maxConcurrency = Number(args['max-concurrency']);
if (args['default-concurrency']) config.defaultConcurrency = Number(args['default-concurrency']);
const agenda = new Agenda(config);
agenda.on('error', (err) => process.stderr.write(`agenda error: ${err?.message ?? err}\n`));
await agenda.ready;
const pool = backend.repository.getPool();

agenda.define(jobName, async (job) => {
  if (args.results) {
    const t1 = Date.now();
    await pool.query('INSERT INTO bench_results (lib, job_id, t0, t1) VALUES ($1, $2, $3, $4)', [
      'node', job.attrs._id.toString(), job.attrs.data?.t0 ?? null, t1,
    ]);
  }
});

let stopping = false;
async function shutdown() {
  if (stopping) process.exit(1);
  stopping = true;
  try {
    await agenda.stop();
    await backend.disconnect();
  } finally {
    process.exit(0);
  }
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

await agenda.start();
emit({ event: 'ready', t: Date.now(), pid: process.pid });
