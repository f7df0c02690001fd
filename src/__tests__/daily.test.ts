import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  SampleSeries,
  chartScales,
  clockLabel,
  jobTitle,
  niceCeiling,
  queueWords,
  shortCommand,
  shortStatus,
  shortTime,
  shouldNotify,
  sizeLabel,
  timeTicks,
  visibleColumns
} from '../model';
import { job } from './fixtures';

describe('the list fits a narrow panel', () => {
  it('keeps status and job always and adds columns as the panel widens', () => {
    assert.deepEqual(visibleColumns(200), ['status', 'job']);
    assert.deepEqual(visibleColumns(310), ['status', 'job', 'duration']);
    assert.deepEqual(visibleColumns(400), ['status', 'job', 'duration', 'memory']);
    assert.deepEqual(visibleColumns(800), ['status', 'job', 'duration', 'memory', 'cpu']);
  });
  it('words a start time short: the time today, else the day', () => {
    const noon = new Date(2026, 10, 30, 12, 5, 0).getTime() / 1000;
    assert.equal(shortTime(noon - 3600, noon), '11:05');
    assert.equal(shortTime(noon - 86400, noon), '2026-11-29');
    assert.equal(shortTime(null, noon), '-');
  });
  it('words each status in one short word for the badge', () => {
    const words = (['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'STOPPED'] as const).map(status => shortStatus({ status }));
    assert.deepEqual(words, ['queued', 'running', 'done', 'failed', 'stopped']);
  });
});

describe('a job is titled by its name or a short command', () => {
  it('shows the name before the command', () => {
    assert.equal(jobTitle(job({ name: 'demo.ipynb · import time', command: ['/opt/venv/bin/python', '-u', '-'] })), 'demo.ipynb · import time');
  });
  it('never shows the runner of a notebook cell or its interpreter path', () => {
    const runner = ['/opt/jupyter-worker/venv/bin/python', '-u', '-m', 'jupyter_worker.cell', '--out', 'x', '--', 'import time\ntime.sleep(3)\n'];
    assert.equal(shortCommand(runner), 'cell: import time');
    const source = ['/opt/jupyter-worker/venv/bin/python', '-u', '-c', '"""runner"""\nimport jupyter_worker\n', '--', '\n  x = 1\ny = 2'];
    assert.equal(shortCommand(source), 'cell: x = 1');
    assert.equal(shortCommand(['/opt/jupyter-worker/venv/bin/python', '-u', '-']), 'cell: code on stdin');
  });
  it('shows the basename and first arguments, ellipsized', () => {
    assert.equal(shortCommand(['/usr/bin/python3', 'train.py', '--epochs', '3']), 'python3 train.py --epochs 3');
    const long = shortCommand(['sh', '-c', 'for i in 1 2 3; do echo line $i; sleep 0.5; done; echo done'], 30);
    assert.equal(long.length, 30);
    assert.ok(long.endsWith('…'), long);
    assert.equal(shortCommand(['python3', '-c', 'import os\nprint(os.getpid())']), "python3 -c 'import os…'");
  });
});

describe('a queued job says where it stands and why', () => {
  it('names its place and the reason', () => {
    assert.equal(queueWords(job({ status: 'QUEUED', queue: { position: 1, reason: '4 of 4 running slots in use' } })), 'next to start: 4 of 4 running slots in use');
    assert.equal(queueWords(job({ status: 'QUEUED', queue: { position: 3, reason: 'you have 2 jobs running, your maximum' } })), '3rd in line: you have 2 jobs running, your maximum');
    assert.equal(queueWords(job({ status: 'QUEUED', queue: { position: 12, reason: '' } })), '12th in line');
    assert.equal(queueWords(job({ status: 'RUNNING', queue: null })), null);
  });
});

describe('notifications follow the setting', () => {
  const failed = job({ status: 'FAILED' });
  const done = job({ status: 'COMPLETED' });
  const stopped = job({ status: 'STOPPED' });
  it('by default (failures) only for a failed job', () => {
    assert.deepEqual([failed, done, stopped].map(j => shouldNotify(j, 'failures', false)), [true, false, false]);
  });
  it('for every ending with all, none with none', () => {
    assert.deepEqual([failed, done, stopped].map(j => shouldNotify(j, 'all', false)), [true, true, true]);
    assert.deepEqual([failed, done, stopped].map(j => shouldNotify(j, 'none', false)), [false, false, false]);
  });
  it('never for a job the user is watching, nor one still running', () => {
    assert.equal(shouldNotify(failed, 'all', true), false);
    assert.equal(shouldNotify(job({ status: 'RUNNING' }), 'all', false), false);
  });
  it('reads an unknown mode as the default', () => {
    assert.equal(shouldNotify(done, 'sometimes', false), false);
    assert.equal(shouldNotify(failed, 'sometimes', false), true);
  });
});

describe('the chart covers the whole run with labelled scales', () => {
  it('rounds tops and words time and sizes', () => {
    assert.deepEqual([0, 0.7, 3, 120, 260, 1000].map(niceCeiling), [1, 1, 5, 200, 500, 1000]);
    assert.deepEqual([0, 45, 120, 150, 5400].map(clockLabel), ['0 s', '45 s', '2 min', '2 min 30 s', '1 h 30 min']);
    assert.deepEqual([0, 512 * 1024, 256 * 2 ** 20, 1.5 * 2 ** 30].map(sizeLabel), ['0', '512 KiB', '256 MiB', '1.5 GiB']);
  });
  it('ticks the time axis at round steps from the start', () => {
    assert.deepEqual(timeTicks(10).map(t => t.label), ['0 s', '2 s', '4 s', '6 s', '8 s', '10 s']);
    assert.deepEqual(timeTicks(600).map(t => t.label), ['0 s', '2 min', '4 min', '6 min', '8 min', '10 min']);
  });
  it('scales memory to the limit, CPU to at least one core, time to the whole run', () => {
    const samples = [
      { t: 100, cpu_percent: 20, memory_bytes: 10 * 2 ** 20 },
      { t: 160, cpu_percent: 180, memory_bytes: 40 * 2 ** 20 }
    ];
    const limited = chartScales(samples, 100, 190, 512 * 2 ** 20, 200);
    assert.equal(limited.span, 90);
    assert.equal(limited.cpuTop, 200);
    assert.equal(limited.memoryTop, 512 * 2 ** 20);
    assert.deepEqual(limited.memoryTicks.map(t => t.label), ['0', '256 MiB', '512 MiB']);
    assert.deepEqual(limited.cpuTicks.map(t => t.label), ['0 %', '100 %', '200 %']);
    const free = chartScales(samples, 100, 105, null, null);
    assert.equal(free.span, 60);
    assert.equal(free.cpuTop, 200);
    assert.equal(free.memoryTop, 50 * 2 ** 20);
    assert.equal(chartScales([], 100, 104, null, null).span, 10, 'a running job starts with 10 s');
    assert.equal(chartScales([], 100, 104, null, null, 1).span, 4, 'an ended job fills the chart');
  });
  it('joins the history and the live samples of the stream', () => {
    const series = new SampleSeries();
    series.addLive({ wall_seconds: 1, cpu_seconds: 0.5, memory_bytes: 5 }, 100);
    series.addLive({ wall_seconds: 3, cpu_seconds: 1.5, memory_bytes: 7 }, 100);
    assert.deepEqual(series.samples, [{ t: 103, cpu_percent: 50, memory_bytes: 7 }]);
    series.load({ samples: [{ t: 101, cpu_percent: 10, memory_bytes: 1 }, { t: 102, cpu_percent: 30, memory_bytes: 2 }], memory_limit_bytes: 64, cpu_limit_percent: null });
    assert.deepEqual(series.samples.map(s => s.t), [101, 102, 103]);
    assert.equal(series.peakCpu(), 50);
    assert.equal(series.memoryLimit, 64);
  });
});
