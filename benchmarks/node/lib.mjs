// Shared helpers of the Node side of benchmarks/compare.py: arguments, an Agenda with command
// monitoring, JSON lines, and the command counter.
import { writeFileSync, renameSync } from 'node:fs';
import { Agenda } from 'agenda';
import { MongoBackend } from '@agendajs/mongo-backend';

/** Parse `--key value` pairs (and bare `--flag`) into an object. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      out._.push(arg);
      continue;
    }
    const key = arg.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) {
      out[key] = true;
    } else {
      out[key] = next;
      i++;
    }
  }
  if (!out.url) throw new Error('--url mongodb://host:port/database is required');
  return out;
}

/** Print one JSON line on stdout. */
export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/**
 * A connected Agenda on `--url` / `--collection`. Only the options given are passed, so an absent
 * option means Agenda's default (processEvery 5 s, maxConcurrency 20, defaultConcurrency 5).
 * The MongoClient is created with `monitorCommands: true`; see `CommandCounter`.
 */
export async function makeAgenda(args) {
  const backend = new MongoBackend({
    address: args.url,
    collection: args.collection || 'agendaJobs',
    options: { monitorCommands: true },
  });
  const config = { backend, name: args.name || 'node-bench' };
  if (args['process-every']) config.processEvery = Number(args['process-every']);
  if (args['max-concurrency']) config.maxConcurrency = Number(args['max-concurrency']);
  if (args['default-concurrency']) config.defaultConcurrency = Number(args['default-concurrency']);
  const agenda = new Agenda(config);
  agenda.on('error', (err) => process.stderr.write(`agenda error: ${err?.message ?? err}\n`));
  await agenda.ready;
  return { agenda, backend, repository: backend.repository };
}

/**
 * Counts the commands this process sends (the driver's 'commandStarted' events) and their server
 * time ('commandSucceeded'/'commandFailed' durations), per command name. Counting starts at
 * construction (after connect and index creation, like the Python side, which starts at 'ready').
 */
export class CommandCounter {
  constructor(mongoClient) {
    this.counts = {};
    this.ms = {};
    this.statements = {};
    this.byCollection = {};
    this.first = {};
    this.enabled = true;
    const writes = { update: 'updates', delete: 'deletes', insert: 'documents' };
    mongoClient.on('commandStarted', (e) => {
      if (!this.enabled) return;
      const name = e.commandName;
      this.counts[name] = (this.counts[name] || 0) + 1;
      const target = name === 'getMore' ? e.command?.collection : e.command?.[name];
      if (typeof target === 'string') {
        const key = `${name} ${target}`;
        this.byCollection[key] = (this.byCollection[key] || 0) + 1;
        if (!(key in this.first)) this.first[key] = Date.now() / 1000;
      }
      // Write statements (one durable commit each on a server that syncs every statement).
      const inTransaction = e.command && 'autocommit' in e.command;
      let statements = 0;
      if (writes[name] && !inTransaction) statements = (e.command[writes[name]] || []).length;
      else if ((name === 'findAndModify' && !inTransaction) || name === 'commitTransaction') statements = 1;
      if (statements) this.statements[name] = (this.statements[name] || 0) + statements;
    });
    const done = (e) => {
      if (!this.enabled) return;
      this.ms[e.commandName] = (this.ms[e.commandName] || 0) + Number(e.duration || 0);
    };
    mongoClient.on('commandSucceeded', done);
    mongoClient.on('commandFailed', done);
  }

  snapshot() {
    return {
      counts: this.counts, ms: this.ms, statements: this.statements,
      by_collection: this.byCollection, first: this.first,
    };
  }

  /** Write the counts as JSON to `path` (atomically). */
  write(path) {
    if (!path || path === true) return;
    const tmp = `${path}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.snapshot()));
    renameSync(tmp, path);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
