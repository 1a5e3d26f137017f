// A Node Agenda 6 worker for the interop tests: runs the named jobs, records every run, exits on its own.
//
//   node worker.mjs --url mongodb://host:port/db|postgresql://... --define a,b[,...]
//        [--collection agendaJobs] [--name node-worker] [--process-every 100]
//        [--results interopRuns]        collection (PostgreSQL: table of JSONB `doc`) receiving one document per run
//        [--delay-ms 0]                 time each handler takes
//        [--concurrency N] [--lock-limit N]   per-definition limits (Agenda's defaults when absent)
//        [--until-runs a=2,b=1]         stop once this worker ran each name at least that often
//        [--until-results N]            stop once the results collection holds N documents (any worker)
//        [--until-polls a=5]            stop once this worker asked the database for a job of `a` 5 times
//        [--timeout-ms 20000]           give up: exit 3, with what was seen, on stderr
//
// Each run inserts into the results collection
//   {jobId, name, worker, data, ranAt, attrs: {type, priority, nextRunAt, lastRunAt, repeatInterval,
//    repeatTimezone, lockedAt}}
// and prints {"event":"run", ...} on stdout. It prints {"event":"ready"} once started. When every --until
// condition holds it drains (waits for running jobs; their final state is saved), unlocks what it still
// holds (as Agenda's stop() does), disconnects and prints
//   {"event":"done","runs":{name: n},"polls":{name: n},"locked":{name: n}}
// where `locked` counts the jobs the lock query returned to this worker. Exit 0.
import { parseArgs, parseCounts, parseList, makeAgenda, makeResults, emit, exitAfter } from './lib.mjs';

const args = parseArgs();
const names = parseList(args.define);
if (names.length === 0) throw new Error('--define name[,name...] is required');
const untilRuns = parseCounts(args['until-runs']);
const untilPolls = parseCounts(args['until-polls']);
const untilResults = args['until-results'] ? Number(args['until-results']) : null;
const delayMs = Number(args['delay-ms'] || 0);
const worker = args.name || 'node-worker';

const runs = {};
const polls = {};
const locked = {};
exitAfter(Number(args['timeout-ms'] || 20000), () => ({ runs, polls, locked }));

const { agenda, backend } = await makeAgenda({ ...args, name: worker });
const repository = backend.repository;
const results = await makeResults(backend, args, args.results || 'interopRuns');

// Count lock queries per name (one per poll and name, more while jobs are found).
const getNextJobToRun = repository.getNextJobToRun.bind(repository);
repository.getNextJobToRun = async (jobName, ...rest) => {
  const found = await getNextJobToRun(jobName, ...rest);
  polls[jobName] = (polls[jobName] || 0) + 1;
  if (found) locked[jobName] = (locked[jobName] || 0) + 1;
  check();
  return found;
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const options = {};
if (args.concurrency) options.concurrency = Number(args.concurrency);
if (args['lock-limit']) options.lockLimit = Number(args['lock-limit']);

for (const name of names) {
  agenda.define(
    name,
    async (job) => {
      const a = job.attrs;
      const record = {
        jobId: a._id.toString(),
        name: a.name,
        worker,
        data: a.data,
        ranAt: new Date(),
        attrs: {
          type: a.type,
          priority: a.priority,
          nextRunAt: a.nextRunAt ?? null,
          lastRunAt: a.lastRunAt ?? null,
          repeatInterval: a.repeatInterval ?? null,
          repeatTimezone: a.repeatTimezone ?? null,
          lockedAt: a.lockedAt ?? null,
        },
      };
      if (delayMs) await sleep(delayMs);
      await results.insert(record);
      runs[name] = (runs[name] || 0) + 1;
      emit({ event: 'run', jobId: record.jobId, name, worker, data: a.data });
      check();
    },
    options,
  );
}

let finishing = null;
let resultsCount = 0;
let counting = false;

function conditionsHold() {
  for (const [name, n] of Object.entries(untilRuns)) if ((runs[name] || 0) < n) return false;
  for (const [name, n] of Object.entries(untilPolls)) if ((polls[name] || 0) < n) return false;
  if (untilResults !== null && resultsCount < untilResults) return false;
  return true;
}

function check() {
  if (finishing) return;
  if (untilResults !== null && !counting) {
    counting = true;
    results
      .count()
      .then((n) => {
        resultsCount = n;
        counting = false;
        if (!finishing && conditionsHold()) finish();
      })
      .catch(() => {
        counting = false;
      });
    return;
  }
  if (conditionsHold()) finish();
}

function finish() {
  finishing = (async () => {
    const processor = agenda.jobProcessor; // kept: drain() forgets it, we unlock what it still holds
    await agenda.drain({ timeout: 10000, closeConnection: false });
    while (processor && processor.isJobQueueFilling.size > 0) await sleep(5);
    const running = new Set(processor ? processor.runningJobs.map((j) => j.attrs._id.toString()) : []);
    const held = processor ? processor.lockedJobs.filter((j) => !running.has(j.attrs._id.toString())) : [];
    if (held.length) await repository.unlockJobs(held.map((j) => j.attrs._id));
    await backend.disconnect();
    emit({ event: 'done', runs, polls, locked });
    process.exit(0);
  })().catch((err) => {
    emit({ event: 'error', message: String(err?.stack ?? err) }, process.stderr);
    process.exit(1);
  });
}

// Polls started before all conditions could hold still count; re-check now and then for --until-results
// (other workers' runs do not call back into this process).
if (untilResults !== null) setInterval(check, 50).unref();
await agenda.start();
emit({ event: 'ready', worker, names });
check();
