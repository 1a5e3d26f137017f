// Agenda 6.2.6's next-run computation (Job.computeNextRunAt) for a batch of job documents, each with
// the clock frozen at its own instant. Nothing touches a database.
//
//   node next-run-batch.mjs < cases.json
//
// stdin: [{"id": ..., "now": ISO, "doc": {repeatInterval, repeatTimezone, repeatAt, skipDays,
//          startDate, endDate, lastRunAt}}, ...]   (dates as ISO strings)
// stdout: one JSON line [{"id", "nextRunAt": ISO or null, "failReason": text or null}, ...]
const RealDate = Date;
let frozen = 0;
// Freeze "now" for every reader of the clock (Agenda, luxon, date.js, cron-parser).
class FrozenDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(frozen);
    else super(...args);
  }
  static now() {
    return frozen;
  }
}
globalThis.Date = FrozenDate;
const { Job } = await import('agenda');

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const dateFields = ['startDate', 'endDate', 'lastRunAt'];
const results = cases.map(({ id, now, doc }) => {
  frozen = new RealDate(now).getTime();
  const attrs = { name: 'oracle', ...doc };
  for (const key of dateFields) if (attrs[key]) attrs[key] = new Date(attrs[key]);
  const job = new Job({}, attrs);
  job.computeNextRunAt();
  const next = job.attrs.nextRunAt;
  return {
    id,
    nextRunAt: next instanceof RealDate && !Number.isNaN(next.getTime()) ? next.toISOString() : null,
    failReason: job.attrs.failReason ?? null,
  };
});
process.stdout.write(JSON.stringify(results) + '\n');
