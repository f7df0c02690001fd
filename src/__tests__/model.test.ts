import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  Job,
  JobList,
  LogBuffer,
  UsageSeries,
  chartPoints,
  formatBytes,
  formatCommand,
  formatDuration,
  jobRequest,
  limitFields,
  splitCommand,
  statusText
} from '../model';

function job(over: Partial<Job>): Job {
  return {
    id: 'a0000000-0000-0000-0000-000000000000',
    name: '',
    owner: 'alice',
    command: ['sleep', '1'],
    status: 'RUNNING',
    limits: {},
    network: 'none',
    created_at: 100,
    started_at: 100,
    metrics: {},
    ...over
  };
}

describe('a command line becomes argv as a shell would split it', () => {
  it('splits on blanks and keeps quoted words whole', () => {
    assert.deepEqual(splitCommand(`python3 -c 'print("a b")'  "x y" z\\ w`), ['python3', '-c', 'print("a b")', 'x y', 'z w']);
  });
  it('keeps empty quoted words', () => {
    assert.deepEqual(splitCommand(`echo '' ""`), ['echo', '', '']);
  });
  it('refuses an unclosed quote', () => {
    assert.throws(() => splitCommand(`echo 'oops`), /unclosed single quote/);
  });
  it('reads back what formatCommand writes', () => {
    const argv = ['sh', '-c', "echo 'hi' there", 'plain'];
    assert.deepEqual(splitCommand(formatCommand(argv)), argv);
  });
});

describe('statuses in words', () => {
  it('uses the server words, else the status', () => {
    assert.equal(statusText(job({ status: 'FAILED', status_text: 'killed: out of memory (limit 64 MiB)' })), 'killed: out of memory (limit 64 MiB)');
    assert.equal(statusText(job({ status: 'QUEUED' })), 'queued');
  });
  it('formats sizes for people', () => {
    assert.deepEqual([3, 2048, 5 * 2 ** 20, 3 * 2 ** 30].map(formatBytes), ['3 B', '2.0 KiB', '5.0 MiB', '3.0 GiB']);
    assert.equal(formatBytes(undefined), '-');
  });
  it('formats durations for people', () => {
    assert.equal(formatDuration(null), '-');
    assert.equal(formatDuration(4.2), '4.2 s');
    assert.equal(formatDuration(185), '3 min 5 s');
    assert.equal(formatDuration(7380), '2 h 3 min');
  });
});

describe('the live job list', () => {
  it('replaces a job by id and says what it was', () => {
    const list = new JobList();
    assert.equal(list.upsert(job({})), undefined);
    assert.equal(list.upsert(job({ status: 'COMPLETED' }))?.status, 'RUNNING');
    assert.equal(list.size, 1);
  });
  it('never replaces an ended job with a record from before its end', () => {
    const list = new JobList();
    list.upsert(job({ status: 'STOPPED' }));
    list.upsert(job({ status: 'RUNNING' }));
    assert.equal(list.get(job({}).id)?.status, 'STOPPED');
  });
  it('filters by status and sorts', () => {
    const list = new JobList();
    list.upsert(job({ id: 'a', name: 'beta', created_at: 1, metrics: { cpu_seconds: 5 } }));
    list.upsert(job({ id: 'b', name: 'alpha', created_at: 2, status: 'FAILED', metrics: { cpu_seconds: 1 } }));
    list.upsert(job({ id: 'c', name: 'gamma', created_at: 3, status: 'QUEUED', started_at: null }));
    const ids = (jobs: Job[]) => jobs.map(j => j.id);
    assert.deepEqual(ids(list.view('ALL', 'newest', 10)), ['c', 'b', 'a']);
    assert.deepEqual(ids(list.view('ALL', 'oldest', 10)), ['a', 'b', 'c']);
    assert.deepEqual(ids(list.view('ALL', 'name', 10)), ['b', 'a', 'c']);
    assert.deepEqual(ids(list.view('ALL', 'cpu', 10)), ['a', 'b', 'c']);
    assert.deepEqual(ids(list.view('ALL', 'status', 10)), ['c', 'a', 'b']);
    assert.deepEqual(ids(list.view('FAILED', 'newest', 10)), ['b']);
    assert.equal(list.count('QUEUED'), 1);
  });
});

describe('usage over time', () => {
  it('turns CPU seconds into percent of a core between samples', () => {
    const series = new UsageSeries(3);
    series.add({ wall_seconds: 1, cpu_seconds: 0.5, memory_bytes: 2 ** 20 });
    series.add({ wall_seconds: 2, cpu_seconds: 1.0, memory_bytes: 2 ** 21 });
    series.add({ wall_seconds: 2, cpu_seconds: 9 });
    assert.deepEqual(series.cpu, [0, 50]);
    assert.deepEqual(series.memoryMiB, [1, 2]);
    assert.equal(series.latestCpu, 50);
  });
  it('keeps a bounded window, the newest at the right of the chart', () => {
    const series = new UsageSeries(2);
    for (let t = 1; t <= 5; t++) {
      series.add({ wall_seconds: t, cpu_seconds: t });
    }
    assert.equal(series.cpu.length, 2);
    assert.equal(chartPoints([0, 100], 100, 100, 10, 3), '50.0,10.0 100.0,0.0');
  });
});

describe('the log', () => {
  it('tells stdout and stderr apart and joins lines split across chunks', () => {
    const log = new LogBuffer(10);
    log.append('stdout', 'hel');
    log.append('stderr', 'oops\n');
    log.append('stdout', 'lo\nwor');
    assert.deepEqual(log.all(), [
      { stream: 'stderr', text: 'oops' },
      { stream: 'stdout', text: 'hello' },
      { stream: 'stdout', text: 'wor' }
    ]);
  });
  it('keeps only the last lines and counts the rest', () => {
    const log = new LogBuffer(3);
    log.append('stdout', '1\n2\n3\n4\n5\n');
    assert.deepEqual(log.lines.map(l => l.text), ['3', '4', '5']);
    assert.equal(log.dropped, 2);
  });
});

describe('the new-job form', () => {
  const fields = limitFields({ default_memory_limit: 1024, max_memory_limit: 2048, job_timeout: 3600, max_job_timeout: 7200 });
  it('is prefilled with the defaults and knows the maxima', () => {
    const memory = fields.find(f => f.key === 'memory_mb');
    assert.deepEqual([memory?.initial, memory?.max], [1024, 2048]);
  });
  it('builds the REST body, leaving out empty limits', () => {
    const body = jobRequest({ command: "python3 -c 'print(1)'", name: ' run ', network: 'none', limits: { memory_mb: '512', timeout_s: '1.5', pids: '' } }, fields);
    assert.deepEqual(body, { command: ['python3', '-c', 'print(1)'], name: 'run', network: 'none', limits: { memory_mb: 512, timeout_s: 1.5 } });
  });
  it('refuses what the server would, naming the field', () => {
    const form = { command: 'true', name: '', network: '', limits: {} };
    assert.throws(() => jobRequest({ ...form, command: '  ' }, fields), /give a command/);
    assert.throws(() => jobRequest({ ...form, limits: { memory_mb: '4096' } }, fields), /Memory: at most 2048 MiB/);
    assert.throws(() => jobRequest({ ...form, limits: { pids: '2.5' } }, fields), /Processes: "2.5" is not a positive whole number/);
    assert.throws(() => jobRequest({ ...form, limits: { cpu_percent: '-1' } }, fields), /CPU/);
  });
});
