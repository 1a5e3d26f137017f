// A Node Agenda 6 worker for benchmarks/compare.py (the Node twin of benchmarks/bench_worker.py).
//
//   node worker.mjs --url mongodb://host:port/db --collection c --job-name bench-noop
//        [--name node-w0] [--process-every MS] [--max-concurrency N] [--default-concurrency N]
//        [--results coll]      the handler records {jobId, t0: data.t0, t1: Date.now()} there (latency)
//        [--counts-file path]  on SIGUSR2: write the command counts there and stop counting
//        [--change-streams]    opt in to MongoChangeStreamNotificationChannel (instant wake-ups; not a default)
//
// Prints {"event":"ready","t":<epoch ms>} once started. SIGTERM/SIGINT: Agenda's stop() (unlocks what is
// held and not running), disconnect, exit 0.
import { MongoChangeStreamNotificationChannel } from '@agendajs/mongo-backend';
import { parseArgs, makeAgenda, emit, CommandCounter } from './lib.mjs';

const args = parseArgs();
const jobName = args['job-name'] || 'bench-noop';
const { agenda, backend, repository } = await makeAgenda(args);
const counter = new CommandCounter(repository.mongoClient);
const results = args.results ? repository.getDb().collection(args.results) : null;
// BENCH_HANDLER=counter: the handler does one updateOne ($inc of one counter document).
const counters = process.env.BENCH_HANDLER === 'counter' ? repository.getDb().collection('bench_counter') : null;

agenda.define(jobName, async (job) => {
  if (counters) await counters.updateOne({ _id: 'jobs' }, { $inc: { n: 1 } }, { upsert: true });
  if (results) {
    const t1 = Date.now();
    await results.insertOne({ jobId: job.attrs._id.toString(), t0: job.attrs.data?.t0 ?? null, t1, lib: 'node' });
  }
});

if (args['change-streams']) {
  agenda.notifyVia(
    new MongoChangeStreamNotificationChannel({ db: repository.getDb(), collection: args.collection || 'agendaJobs' }),
  );
}

process.on('SIGUSR2', () => {
  counter.write(args['counts-file']);
  counter.enabled = false;
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
