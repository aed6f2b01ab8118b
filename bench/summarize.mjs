// Medians of bench/run.sh results: `node bench/summarize.mjs RESULTS.jsonl`.
// Prints a Markdown table (one row per case and figure, one column per server) and every
// run's value, so a noisy run can be seen for what it is.
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node bench/summarize.mjs RESULTS.jsonl');
  process.exit(64);
}
const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
// (Lines from an early run.sh have empty noise fields: read them as null.)
const runs = lines.map((l) => JSON.parse(l.replaceAll('":,', '":null,')));

const M = (x) => (x / 1e6).toFixed(2) + ' M';
const k = (x) => (x / 1e3).toFixed(1) + ' k';
const ms = (us) => (us >= 1e6 ? (us / 1e6).toFixed(2) + ' s' : (us / 1e3).toFixed(1) + ' ms');
// A fixed-rate fanout: latency, cost per delivery with and without softirq, rate kept.
const midRate = () => [
  ['latency p50 (from intended send)', (r) => r.latency_us.p50, ms],
  ['latency p99 (from intended send)', (r) => r.latency_us.p99, ms],
  ['latency max', (r) => r.latency_us.max, ms],
  ['server CPU per delivery (µs), with softirq', (r) => (r.server_cpu_s / r.delivered) * 1e6, (x) => x.toFixed(3)],
  ['server CPU per delivery (µs), without softirq', (r) => (r.server_cpu_without_softirq_s / r.delivered) * 1e6, (x) => x.toFixed(3)],
  ['server user (CPU-s)', (r) => r.server_user_s, (x) => x.toFixed(2)],
  ['server system (CPU-s)', (r) => r.server_system_s, (x) => x.toFixed(2)],
  ['achieved publish rate (msg/s)', (r) => r.achieved_rate, (x) => x.toFixed(0)],
  ['runs that missed the rate', (r) => (r.rate_missed ? 1 : 0), String],
  ['lost / gaps / duplicates / reordered', (r) => r.lost + r.gaps + r.duplicates + r.out_of_order, String],
];
// Fanout at max rate: cost per delivery (with and without softirq), latency, bytes on
// the wire per delivery (issue #15: beside the compressed and SSE figures).
const fanoutMax = () => [
  ['deliveries per server CPU-s', (r) => r.deliveries_per_server_cpu_s, M],
  ['deliveries per server CPU-s, without softirq', (r) => r.deliveries_per_server_cpu_s_without_softirq, M],
  ['deliveries/s', (r) => r.deliveries_per_s, M],
  ['lost', (r) => r.lost, String],
  ['latency p50', (r) => r.latency_us.p50, ms],
  ['latency p99', (r) => r.latency_us.p99, ms],
  ['bytes on the wire per delivery', (r) => r.wire_bytes_per_delivery, (x) => x.toFixed(1)],
  ['server peak RSS (MiB)', (r) => r.server_peak_rss_kib / 1024, (x) => x.toFixed(1)],
  ['generator busy (CPU-s / s)', (r) => r.client_cpu_s / r.elapsed_s, (x) => x.toFixed(2)],
];
const figures = {
  fanout1k: fanoutMax(),
  // issue #15: the same over SSE / NDJSON streams and with permessage-deflate.
  'fanout1k-sse': fanoutMax(),
  'fanout1k-ndjson': fanoutMax(),
  'fanout1k-deflate': fanoutMax(),
  idle10k: [
    ['KiB per connection', (r) => r.kib_per_connection, (x) => x.toFixed(2)],
    ['open', (r) => r.open, String],
    ['connects/s', (r) => r.connects_per_s, k],
  ],
  idlemax: [
    ['open (of 19,900)', (r) => r.open, String],
    ['KiB per connection', (r) => r.kib_per_connection, (x) => x.toFixed(2)],
    ['connects/s', (r) => r.connects_per_s, k],
  ],
  fanout10k: [
    ['lost', (r) => r.lost, String],
    ['latency p50', (r) => r.latency_us.p50, ms],
    ['latency p99', (r) => r.latency_us.p99, ms],
    ['latency max', (r) => r.latency_us.max, ms],
    ['deliveries per server CPU-s', (r) => r.deliveries_per_server_cpu_s, M],
    ['server CPU busy (CPU-s / s)', (r) => r.server_cpu_s / r.elapsed_s, (x) => x.toFixed(2)],
    ['generator busy (CPU-s / s)', (r) => r.client_cpu_s / r.elapsed_s, (x) => x.toFixed(2)],
  ],
  // issue #18: mid rates (latency from the intended send time), the softirq split, the
  // rate achieved, and memory after traffic.
  mid1k100: midRate(),
  mid1k1500: midRate(),
  fanout10k10: midRate(),
  traffic10k: [
    ['KiB per connection, idle', (r) => r.kib_per_connection, (x) => x.toFixed(2)],
    ['KiB per connection after 1,000 messages', (r) => r.kib_per_connection_after_traffic, (x) => x.toFixed(2)],
    ['deliveries lost', (r) => r.traffic_expected - r.traffic_delivered, String],
  ],
  echo100: [
    ['round trips per server CPU-s', (r) => r.round_trips_per_server_cpu_s, k],
    ['round trips/s', (r) => r.round_trips_per_s, k],
    ['latency p99', (r) => r.latency_us.p99, ms],
  ],
};

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};

const servers = [...new Set(runs.map((r) => r.server))];
const cases = [...new Set(runs.map((r) => r.case))];
console.log(`| case | figure | ${servers.join(' | ')} |`);
console.log(`|---|---|${servers.map(() => '---').join('|')}|`);
// Every case: how much else ran on the server's core (a build elsewhere, say), and the
// loopback receive work done there in softirq (mostly charged to the server itself).
const noise = [
  ['other processes on the server core (CPU-s)', (r, w) => w.server_core_others_s, (x) => x.toFixed(2)],
  ['softirq on the server core (CPU-s)', (r, w) => w.server_core_softirq_s, (x) => x.toFixed(2)],
];
for (const c of cases) {
  // A CASE-wss case (issue #18 item 5: the same over TLS) shows CASE's figures.
  for (const [name, get, fmt] of [...(figures[c] ?? figures[c.replace(/-wss$/, '')] ?? []), ...noise]) {
    const cells = servers.map((s) => {
      const values = runs
        .filter((r) => r.case === c && r.server === s && r.result && !r.result.error)
        .map((r) => {
          try {
            return get(r.result, r);
          } catch {
            return NaN;
          }
        })
        .filter((v) => typeof v === 'number' && Number.isFinite(v));
      if (!values.length) return '—';
      const all = values.map(fmt).join(', ');
      return `${fmt(median(values))} (${all})`;
    });
    console.log(`| ${c} | ${name} | ${cells.join(' | ')} |`);
  }
}
