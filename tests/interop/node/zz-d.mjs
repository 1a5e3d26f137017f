import date from 'date.js';
const base = new Date('2026-04-01T13:45:12.345Z');
for (const s of JSON.parse(process.argv[2])) {
  let r; try { r = date(s, new Date(base)).toISOString(); } catch (e) { r = 'ERR ' + e; }
  console.log(JSON.stringify(s).padEnd(22), r, r === base.toISOString() ? 'UNCHANGED' : '');
}
