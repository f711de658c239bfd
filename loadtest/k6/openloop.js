// Open-loop load for `python -m loadtest.bench` (k6, constant-arrival-rate).
//
// k6 starts one iteration every 1/RATE s whether or not earlier ones have
// answered (an open loop), so a stall shows in the latency of every request
// that was due during it instead of hiding them (coordinated omission). An
// iteration that finds no free VU is not sent late: k6 counts it in
// `dropped_iterations`, which the runner treats as a failed step.
//
// Latency is `lab_latency`: from the moment the iteration asked for a
// connection (http_req_blocked: waiting for a free connection, DNS, TCP
// connect) to the last byte of the answer (http_req_duration). k6 keeps every
// sample of a Trend, so the percentiles are exact (no histogram binning).
//
// Settings (environment, `-e NAME=value`):
//   LAB_URL       base URL, e.g. http://nginx:8080
//   LAB_PATH      path with `{item}` for the key, default /api/version?item={item}
//   RATE          requests per second; DURATION seconds; VUS pre-allocated
//   KEYS          key space (items FIRST_ITEM..FIRST_ITEM+KEYS-1), default 1
//   FIRST_ITEM    the first item, default 0 (/api/version?item=0; the items API starts at 1)
//   SKEW          "uniform", a Zipf exponent s (P(rank k) ~ 1/k^s), or "each":
//                 every key in turn (iteration i reads rank i mod KEYS), so a run
//                 of KEYS/RATE seconds reads each key once (the sweep's priming)
//   SEED          key sequence seed (each VU offsets it)
import http from 'k6/http';
import { Trend, Counter } from 'k6/metrics';
import exec from 'k6/execution';

const BASE = __ENV.LAB_URL;
const PATH = __ENV.LAB_PATH || '/api/version?item={item}';
const RATE = Math.max(1, Math.round(Number(__ENV.RATE || 100))); // k6 takes whole requests per time unit
const DURATION = Number(__ENV.DURATION || 10);
const VUS = Number(__ENV.VUS || Math.max(20, Math.ceil(RATE * 0.2)));
const KEYS = Math.max(1, Number(__ENV.KEYS || 1));
const FIRST_ITEM = Number(__ENV.FIRST_ITEM || 0);
const SKEW = __ENV.SKEW || 'uniform';
const SEED = Number(__ENV.SEED || 1);
const TIMEOUT = __ENV.TIMEOUT || '30s';

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['count', 'min', 'med', 'avg', 'p(90)', 'p(95)', 'p(99)', 'p(99.9)', 'max'],
  scenarios: {
    open: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${DURATION}s`,
      preAllocatedVUs: VUS,
      maxVUs: VUS,
      gracefulStop: '10s',
    },
  },
  // Keep-alive connections per VU, as a browser or a proxy keeps them.
  noConnectionReuse: false,
  userAgent: 'cachelab-k6',
};

const latency = new Trend('lab_latency', true);
const errors = new Counter('lab_errors');

// The Zipf CDF over ranks 1..KEYS, once per VU (init code runs per VU).
let cdf = null;
if (KEYS > 1 && SKEW !== 'uniform' && SKEW !== 'each') {
  const s = Number(SKEW);
  cdf = new Float64Array(KEYS);
  let total = 0;
  for (let k = 1; k <= KEYS; k++) { total += 1 / Math.pow(k, s); cdf[k - 1] = total; }
  for (let k = 0; k < KEYS; k++) { cdf[k] /= total; }
}

// A small xorshift generator per VU: a repeatable key sequence.
let state = 0;
function random() {
  if (state === 0) { state = (SEED * 2654435761 + exec.vu.idInTest * 40503) >>> 0 || 1; }
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return state / 4294967296;
}

// The rank (0 = the most popular) of the next key.
function rank() {
  if (KEYS === 1) { return 0; }
  if (SKEW === 'each') { return exec.scenario.iterationInTest % KEYS; }
  const u = random();
  if (cdf === null) { return Math.floor(u * KEYS); }
  let lo = 0, hi = KEYS - 1;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (cdf[mid] < u) { lo = mid + 1; } else { hi = mid; } }
  return lo;
}

function item() { return FIRST_ITEM + rank(); }

export default function () {
  const res = http.get(BASE + PATH.replace('{item}', String(item())), { timeout: TIMEOUT });
  latency.add(res.timings.blocked + res.timings.duration);
  if (res.status !== 200) { errors.add(1); }
}

export function handleSummary(data) {
  const m = data.metrics;
  const value = (name, key) => (m[name] && m[name].values[key] !== undefined ? m[name].values[key] : 0);
  const out = {
    rate: RATE,
    duration_s: DURATION,
    vus: VUS,
    seed: SEED,
    run_ms: data.state.testRunDurationMs,
    requests: value('http_reqs', 'count'),
    errors: value('lab_errors', 'count'),
    dropped: value('dropped_iterations', 'count'),
    latency_ms: m.lab_latency ? m.lab_latency.values : null,
  };
  return { stdout: JSON.stringify(out) + '\n' };
}
