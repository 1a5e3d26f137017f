// Agenda 6.2's job log, from Node: read what another process wrote, or write some by running a job.
//
//   node logs.mjs --url mongodb://host:port/db --read JOB_ID          -> {"event":"logs","entries":[...],"total":N}
//   node logs.mjs --url mongodb://host:port/db --run NAME [--fail]     -> {"event":"ran","jobId":"..."}
//
// --run defines NAME (throwing "node says no" with --fail), saves one job, runs it with logging on and
// exits once its `complete` entry is stored. Any error -> message on stderr, exit 1; timeout -> 3.
import { parseArgs, makeAgenda, emit, exitAfter } from './lib.mjs';

const args = parseArgs();
exitAfter(Number(args['timeout-ms'] || 20000));
const { agenda, backend } = await makeAgenda(args, { logging: true });
try {
  if (args.read) {
    const { entries, total } = await agenda.getLogs({ jobId: String(args.read), sort: 'asc' });
    emit({ event: 'logs', entries, total });
  } else if (args.run) {
    const name = String(args.run);
    agenda.define(name, async () => {
      if (args.fail) throw new Error('node says no');
    });
    const job = await agenda.now(name);
    const jobId = job.attrs._id.toString();
    await agenda.start();
    for (;;) {
      const { total } = await agenda.getLogs({ jobId, event: 'complete' });
      if (total > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await agenda.stop();
    await backend.disconnect();
    emit({ event: 'ran', jobId });
    // A stopped Agenda may leave timers behind (as worker.mjs finds): end here, the entries are stored.
    process.exit(0);
  } else {
    throw new Error('--read JOB_ID or --run NAME is required');
  }
} finally {
  await backend.disconnect();
}
