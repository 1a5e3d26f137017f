// Saves jobs through Node Agenda's own API on @agendajs/postgres-backend, one per stdin line, so each save
// is announced on the backend's NOTIFY channel (the latency workload of `compare.py --store postgres`).
//
//   node pg-client.mjs --url postgresql://... [--job-name bench-noop]
//   stdin:  one line per job (any text); EOF ends the process
//   stdout: {"event":"ready"} once started, then {"event":"saved","t0":...} per job, t0 (epoch ms) being
//           taken just before now() and stored in the job's data
import { createInterface } from 'node:readline';
import { Agenda } from 'agenda';
import { PostgresBackend } from '@agendajs/postgres-backend';
import { parseArgs, emit } from './lib.mjs';

const args = parseArgs();
const jobName = args['job-name'] || 'bench-noop';
const backend = new PostgresBackend({ connectionString: args.url });
// A large processEvery: this process defines no job, it only saves and announces them.
const agenda = new Agenda({ backend, name: 'node-client', processEvery: 3_600_000 });
await agenda.ready;
await agenda.start(); // connects the notification channel: without it now() saves but does not NOTIFY
emit({ event: 'ready' });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const t0 = Date.now();
  await agenda.now(jobName, { t0 });
  emit({ event: 'saved', t0 });
}
await agenda.stop();
await backend.disconnect();
process.exit(0);
