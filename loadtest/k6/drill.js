// Steady traffic for the cluster drills (loadtest/drills.py runs it in a k6
// container on the stack's network and reads every request back from k6's
// JSON output): readers at a constant arrival rate (open loop: a stall does not
// slow the senders down), and writers that PUT their item, then GET it at once.
// Each request is one point of the metric `drill_op`: its latency (ms) with the
// start time and what the answer said as tags.
import http from 'k6/http';
import exec from 'k6/execution';
import { Trend } from 'k6/metrics';

const BASE = __ENV.BASE_URL;
const HOT = __ENV.HOT.split(',').map(Number);
const WRITTEN = JSON.parse(__ENV.WRITTEN); // [[item, mode], ...]
const PLAN = HOT.map((item) => [item, 'delete']).concat(WRITTEN);
const TOKEN = __ENV.TOKEN;
const ops = new Trend('drill_op', true);

const scenarios = {
  readers: {
    executor: 'constant-arrival-rate',
    exec: 'read',
    rate: Number(__ENV.RATE),
    timeUnit: '1s',
    duration: __ENV.DURATION,
    preAllocatedVUs: 20,
    maxVUs: 200,
  },
};
// One writer per written item, each its own scenario (its item in its env).
WRITTEN.forEach(([item, mode], n) => {
  scenarios[`writer_${n}`] = {
    executor: 'constant-vus',
    exec: 'write',
    vus: 1,
    duration: __ENV.DURATION,
    env: { ITEM: String(item), MODE: mode },
  };
});

export const options = {
  discardResponseBodies: false,
  summaryTrendStats: ['p(50)'],
  scenarios,
};

function record(kind, item, mode, started, res) {
  let version = -1;
  let source = '';
  let action = '';
  if (res.status === 200) {
    try {
      const body = res.json();
      version = body.item.version;
      source = body.source || '';
      action = body.cache_action || '';
    } catch (e) {
      version = -1;
    }
  }
  const status = res.headers['Cache-Status'] || '';
  const detail = kind === 'write' ? action : ((status.match(/detail=([^;,\s]+)/) || [])[1] || '');
  ops.add(Date.now() - started, {
    kind,
    item: String(item),
    mode,
    start: String(started),
    status: String(res.status),
    version: String(version),
    cache: res.headers['X-Cache'] || '',
    source,
    detail,
    error: res.error_code ? String(res.error_code) : '',
  });
}

export function read() {
  const [item, mode] = PLAN[exec.scenario.iterationInTest % PLAN.length];
  const started = Date.now();
  const res = http.get(`${BASE}/api/items/${item}?mode=${mode}`, { timeout: '30s' });
  record('read', item, mode, started, res);
}

export function write() {
  const item = Number(__ENV.ITEM);
  const mode = __ENV.MODE;
  let started = Date.now();
  const put = http.put(
    `${BASE}/api/items/${item}?mode=${mode}`,
    JSON.stringify({ payload: `w${exec.scenario.iterationInTest}` }),
    {
      timeout: '30s',
      headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    },
  );
  record('write', item, mode, started, put);
  started = Date.now();
  record('read', item, mode, started, http.get(`${BASE}/api/items/${item}?mode=${mode}`, { timeout: '30s' }));
}
