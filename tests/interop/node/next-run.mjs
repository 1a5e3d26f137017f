// Agenda's own next-run computation (Job.computeNextRunAt) for every job of a collection, from given
// lastRunAt instants, without running anything.
//
//   node next-run.mjs --url mongodb://host:port/db --last-run-at ISO[,ISO...] [--collection agendaJobs]
//                     [--every '[["interval", "timezone or null", "job name"], ...]'] [--timeout-ms 15000]
//
// --every first saves those recurring jobs with Node's agenda.every(interval, name, undefined, {timezone})
// (a JSON number as interval is milliseconds, as in Node).
//
// stdout: {"event":"next-run","results":[{id,name,repeatInterval,repeatTimezone,lastRunAt,nextRunAt,
//          failReason}]}   (nextRunAt null and failReason set when Agenda rejects the interval)
import { Job } from 'agenda';
import { parseArgs, parseList, makeAgenda, emit, exitAfter } from './lib.mjs';

const args = parseArgs();
exitAfter(Number(args['timeout-ms'] || 15000));
const instants = parseList(args['last-run-at']).map((text) => new Date(text));
if (instants.length === 0 || instants.some((d) => Number.isNaN(d.getTime()))) {
  throw new Error('--last-run-at ISO[,ISO...] is required');
}
const { agenda, backend } = await makeAgenda(args);
try {
  for (const [interval, timezone, name] of JSON.parse(args.every || '[]')) {
    await agenda.every(interval, name, undefined, timezone ? { timezone } : {});
  }
  const { jobs } = await agenda.queryJobs({});
  const results = [];
  for (const attrs of jobs) {
    for (const lastRunAt of instants) {
      const job = new Job(agenda, { ...attrs, lastRunAt, failReason: undefined });
      job.computeNextRunAt();
      results.push({
        id: attrs._id.toString(),
        name: attrs.name,
        repeatInterval: attrs.repeatInterval ?? null,
        repeatTimezone: attrs.repeatTimezone ?? null,
        lastRunAt,
        nextRunAt: job.attrs.nextRunAt ?? null,
        failReason: job.attrs.failReason ?? null,
      });
    }
  }
  emit({ event: 'next-run', results });
} finally {
  await backend.disconnect();
}
