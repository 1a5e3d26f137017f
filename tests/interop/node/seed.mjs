// Save the jobs of the Node -> Python test with Node Agenda, print what was saved, and exit.
//
//   node seed.mjs --url mongodb://host:port/db [--collection agendaJobs] [--name node-seeder]
//                 [--later-ms 1500] [--timeout-ms 15000]
//
// Saves:  node-now    now(), data = PAYLOAD (nested objects, dates, arrays, numbers, null, unicode)
//         node-later  schedule(now + later-ms), data {step: 'later'}
//         node-every  every('1 second'), data {kind: 'human'}
//         node-every-ms  every(1000) (a number: milliseconds), data {kind: 'ms'}
//         node-cron   every('*/1 * * * * *', {timezone: 'Europe/Berlin'}), data {kind: 'cron'}  (6-field cron)
//         node-prio   two jobs with the same nextRunAt (1 minute ago): priority 'high' (data {rank: 'high'})
//                     and priority 'low' (data {rank: 'low'}), the low one saved first
// stdout: {"event":"seeded","jobs":[{id,name,priority,nextRunAt,type,repeatInterval,...}]}
import { parseArgs, makeAgenda, emit, exitAfter, jobSummary } from './lib.mjs';

const PAYLOAD = {
  user: { id: 42, name: 'Zoë', roles: ['admin', 'ops'], address: { city: 'Köln', zip: '50667' } },
  when: new Date('2024-02-29T12:34:56.789Z'),
  items: [
    { sku: 'A-1', qty: 2, price: 9.5, at: new Date('2025-01-01T00:00:00.000Z') },
    { sku: 'B-2', qty: 1, price: 0.1, at: null },
  ],
  matrix: [[1, 2], [3, [4, 'five']]],
  flag: true,
  nothing: null,
  empty: {},
  none: [],
};

const args = parseArgs();
exitAfter(Number(args['timeout-ms'] || 15000));
const { agenda, backend } = await makeAgenda({ name: 'node-seeder', ...args });
try {
  const saved = [];
  saved.push(await agenda.now('node-now', PAYLOAD));
  saved.push(await agenda.schedule(new Date(Date.now() + Number(args['later-ms'] || 1500)), 'node-later', { step: 'later' }));
  saved.push(await agenda.every('1 second', 'node-every', { kind: 'human' }));
  saved.push(await agenda.every(1000, 'node-every-ms', { kind: 'ms' }));
  saved.push(await agenda.every('*/1 * * * * *', 'node-cron', { kind: 'cron' }, { timezone: 'Europe/Berlin' }));
  const due = new Date(Date.now() - 60_000);
  saved.push(await agenda.create('node-prio', { rank: 'low' }).priority('low').schedule(due).save());
  saved.push(await agenda.create('node-prio', { rank: 'high' }).priority('high').schedule(due).save());
  emit({ event: 'seeded', jobs: saved.map((job) => jobSummary(job.attrs)) });
} finally {
  await backend.disconnect();
}
