// Save one-off jobs from a started Node Agenda, so its notification channel (PostgreSQL: NOTIFY on the
// jobs channel) announces them to other workers, then exit. Defines nothing, so it runs nothing itself.
//
//   node notify.mjs --url postgresql://... --now NAME [--data '{"k":1}'] [--count 1] [--timeout-ms 15000]
//
// stdout: {"event":"saved","jobs":[{id,name,data,nextRunAt}],"savedAt":"<ISO>","notifications":true|false}
import { parseArgs, makeAgenda, emit, exitAfter, jobSummary } from './lib.mjs';

const args = parseArgs();
if (!args.now || args.now === true) throw new Error('--now NAME is required');
exitAfter(Number(args['timeout-ms'] || 15000));
const { agenda, backend } = await makeAgenda({ name: 'node-notifier', ...args });
// start() connects the notification channel; without it now() saves but announces nothing.
await agenda.start();
const data = args.data ? JSON.parse(String(args.data)) : {};
const saved = [];
const savedAt = new Date();
for (let i = 0; i < Number(args.count || 1); i++) saved.push(await agenda.now(String(args.now), data));
emit({
  event: 'saved',
  jobs: saved.map((job) => jobSummary(job.attrs)),
  savedAt,
  notifications: agenda.hasNotificationChannel(),
});
await agenda.stop();
await backend.disconnect();
process.exit(0);
