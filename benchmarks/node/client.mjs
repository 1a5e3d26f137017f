// The client side of benchmarks/compare.py for Node Agenda 6 (no worker: start() is never called).
//
//   node client.mjs latency  --url U --collection c --job-name n --gaps 120,35,...   now() one job per gap,
//                                                                                  data {t0: Date.now(), i}
//   node client.mjs schedule --url U --collection c --job-name n --count N          now() N times, one at a time
//   node client.mjs claim    --url U --collection c --job-name n --count K          Agenda's lock query K times
//                                                                  [--cap-ms 120000] (stop after this long)
//   node client.mjs shape    --url U --collection c --job-name n                    save one job with now()
//
// Prints one JSON line with the result.
import { performance } from 'node:perf_hooks';
import { parseArgs, makeAgenda, emit, sleep } from './lib.mjs';

const args = parseArgs();
const mode = args._[0];
const jobName = args['job-name'] || 'bench-noop';
const { agenda, backend, repository } = await makeAgenda({ name: 'node-client', ...args });

try {
  if (mode === 'latency') {
    const gaps = String(args.gaps || '').split(',').filter(Boolean).map(Number);
    const started = performance.now();
    for (let i = 0; i < gaps.length; i++) {
      await agenda.now(jobName, { t0: Date.now(), i });
      await sleep(gaps[i]);
    }
    emit({ mode, created: gaps.length, seconds: (performance.now() - started) / 1000 });
  } else if (mode === 'schedule') {
    const count = Number(args.count || 100);
    const started = performance.now();
    for (let i = 0; i < count; i++) await agenda.now(jobName, { i });
    emit({ mode, count, seconds: (performance.now() - started) / 1000 });
  } else if (mode === 'claim') {
    // JobProcessor.findAndLockNextJob with Agenda's defaults: nextScanAt = now + processEvery (5 s),
    // lockDeadline = now - lockLifetime (10 min).
    const count = Number(args.count || 5);
    const times = [];
    let found = 0;
    const capMs = Number(args['cap-ms'] || 120000);
    const began = performance.now();
    for (let i = 0; i < count && (i === 0 || performance.now() - began < capMs); i++) {
      const now = new Date();
      const t = performance.now();
      const job = await repository.getNextJobToRun(
        jobName,
        new Date(now.getTime() + 5000),
        new Date(now.getTime() - 600000),
        now,
        { lastModifiedBy: 'node-claim' },
      );
      times.push(performance.now() - t);
      if (job) found++;
    }
    emit({ mode, times, found });
  } else if (mode === 'shape') {
    const job = await agenda.now(jobName, { i: 0 });
    emit({ mode, id: job.attrs._id.toString() });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} finally {
  await backend.disconnect();
}
