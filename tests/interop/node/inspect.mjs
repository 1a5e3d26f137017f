// Read a jobs collection the way Agendash / a Node service would, and print it as one JSON line.
//
//   node inspect.mjs --url mongodb://host:port/db [--collection agendaJobs] [--names a,b] [--timeout-ms 15000]
//
// stdout: {"event":"inspect","overview":[getJobsOverview()...],"jobs":[{id,name,state,...}],"total":N,
//          "byState":{"completed":[id...],...}}    exit 0; any error -> message on stderr, exit 1; timeout -> 3
import { parseArgs, parseList, makeAgenda, emit, exitAfter, jobSummary } from './lib.mjs';

const args = parseArgs();
exitAfter(Number(args['timeout-ms'] || 15000));
const { agenda, backend } = await makeAgenda(args);
try {
  const names = parseList(args.names);
  const overview = await agenda.getJobsOverview();
  const { jobs, total } = await agenda.queryJobs(names.length ? { names } : {});
  const byState = {};
  for (const state of ['running', 'scheduled', 'queued', 'completed', 'failed', 'repeating', 'paused']) {
    const { jobs: matching } = await agenda.queryJobs({ ...(names.length ? { names } : {}), state });
    byState[state] = matching.map((j) => j._id.toString());
  }
  emit({ event: 'inspect', overview, total, jobs: jobs.map(jobSummary), byState });
} finally {
  await backend.disconnect();
}
