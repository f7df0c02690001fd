import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  Job,
  JobList,
  LogBuffer,
  LogFrameReader,
  UsageSeries,
  chartPoints,
  contentsFolder,
  FollowedFolder,
  formatBytes,
  formatCommand,
  formatDuration,
  inert,
  LimitRow,
  jobRequest,
  limitFields,
  limitWords,
  parseMounts,
  splitCommand,
  statusText
} from '../model';
import { job } from './fixtures';

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

/** Rows as `capabilities` serves them (jupyter_worker/limits.py LimitRow.describe, plus the
 * caller's default and maximum). */
function limitRow(over: Partial<LimitRow> & Pick<LimitRow, 'field' | 'kind' | 'label' | 'unit'>): LimitRow {
  return {
    what: `${over.label.toLowerCase()} limit`,
    flag: `--max-${over.field}`,
    words: `${over.label} of the job`,
    low: null,
    high: null,
    default_setting: null,
    max_setting: null,
    default: null,
    maximum: null,
    ...over
  };
}

const ROWS: LimitRow[] = [
  limitRow({ field: 'memory_mb', kind: 'mib', label: 'Memory', unit: 'MiB', default: 1024, maximum: 2048 }),
  limitRow({ field: 'pids', kind: 'count', label: 'Processes', unit: '', default: 100, maximum: 100 }),
  limitRow({ field: 'io_bps', kind: 'rate', label: 'I/O', unit: 'bytes/s', default: 52428800, maximum: 52428800 }),
  limitRow({ field: 'timeout_s', kind: 'duration', label: 'Timeout', unit: 's', default: 3600, maximum: 86400 }),
  limitRow({ field: 'cpuset', kind: 'cpu_list', label: 'CPUs', unit: '' })
];

describe('the new-job form', () => {
  const fields = limitFields({ limits: ROWS });
  const field = (key: string) => fields.find(f => f.key === key);
  it('offers a field per row of the executor\'s table, in its order, labelled with the unit', () => {
    assert.deepEqual(fields.map(f => [f.key, f.label]), [
      ['memory_mb', 'Memory (MiB)'],
      ['pids', 'Processes'],
      ['io_bps', 'I/O (bytes/s)'],
      ['timeout_s', 'Timeout (s)'],
      ['cpuset', 'CPUs']
    ]);
    assert.equal(field('memory_mb')?.help, 'Memory of the job');
    assert.deepEqual(limitFields({}), []);
  });
  it('shows the default a job asking for nothing gets (the executor lowers it to the maximum) and the maximum', () => {
    assert.deepEqual([field('memory_mb')?.placeholder, field('memory_mb')?.hint], ['default 1024', 'max 2048 MiB']);
    assert.deepEqual([field('pids')?.placeholder, field('pids')?.hint], ['default 100', 'max 100']);
    assert.deepEqual([field('io_bps')?.placeholder, field('cpuset')?.placeholder], ['default 52428800', 'no limit']);
    assert.equal(field('cpuset')?.hint, '');
  });
  it('sends the limits as typed, units and all, leaving out empty ones', () => {
    const limits = { memory_mb: ' 2G ', timeout_s: '10m', pids: '', cpuset: '0-1', io_bps: '512' };
    const body = jobRequest({ command: "python3 -c 'print(1)'", name: ' run ', network: 'none', limits, folder: '', mounts: '' }, fields);
    assert.deepEqual(body, {
      command: ['python3', '-c', 'print(1)'],
      folder: '',
      name: 'run',
      network: 'none',
      limits: { memory_mb: '2G', io_bps: '512', timeout_s: '10m', cpuset: '0-1' }
    });
  });
  it('refuses a form with no command', () => {
    assert.throws(() => jobRequest({ command: '  ', name: '', network: '', limits: {}, folder: '', mounts: '' }, fields), /give a command/);
  });
  it('sends the folder as a contents path and the mounts one a string', () => {
    const form = { command: 'python3 train.py', name: '', network: '', limits: {}, folder: ' proj/data/ ', mounts: 'in:/in\n, out:out:rw ,\n' };
    assert.deepEqual(jobRequest(form, fields), {
      command: ['python3', 'train.py'],
      limits: {},
      folder: 'proj/data',
      mounts: ['in:/in', 'out:out:rw']
    });
  });
  it('refuses a malformed mount and names it', () => {
    const form = { command: 'true', name: '', network: '', limits: {}, folder: '', mounts: 'a:b\nno-destination' };
    assert.throws(() => jobRequest(form, fields), /mount: 'no-destination' is not SRC:DST/);
  });
});

describe("the form's mounts", () => {
  it('takes one a line or comma-separated, blanks ignored', () => {
    assert.deepEqual(parseMounts(' a:/a \n\n b:/b:rw,c:c:ro , '), ['a:/a', 'b:/b:rw', 'c:c:ro']);
    assert.deepEqual(parseMounts('   '), []);
  });
  it('refuses a mount without both paths or with a mode other than ro or rw', () => {
    for (const bad of ['a', ':b', 'a:', 'a:b:rx', 'a:b:rw:x', 'a::rw']) {
      assert.throws(() => parseMounts(bad), /is not SRC:DST, SRC:DST:ro or SRC:DST:rw/, bad);
    }
  });
});

describe("the form's folder", () => {
  it("follows the file browser's folder until the user types one", () => {
    const folder = new FollowedFolder();
    assert.equal(folder.value, '');
    folder.browsed('proj');
    assert.equal(folder.value, 'proj');
    folder.browsed('proj/data/');
    assert.equal(folder.value, 'proj/data');
    folder.typedIn('elsewhere');
    folder.browsed('proj');
    assert.equal(folder.value, 'elsewhere');
  });
  it('follows again once told to, from where the browser is', () => {
    const folder = new FollowedFolder();
    folder.typedIn('mine');
    folder.follow('proj');
    assert.equal(folder.value, 'proj');
    folder.browsed('other');
    assert.equal(folder.value, 'other');
  });
  it('keeps a leading slash, so the server refuses an absolute path instead of reading it from the root', () => {
    assert.deepEqual(['/etc/', '/', '', 'a//'].map(contentsFolder), ['/etc', '/', '', 'a']);
  });
});

describe("a job's limits in words", () => {
  it('names every set limit with its label and unit, in the order of the table', () => {
    const limits = { timeout_s: 90, memory_mb: 512, pids: null, io_bps: null, cpuset: '0,2' };
    assert.deepEqual(limitWords(limits, ROWS), ['Memory 512 MiB', 'Timeout 90 s', 'CPUs 0,2']);
  });
  it('shows a field the table does not name by its field name', () => {
    assert.deepEqual(limitWords({ memory_mb: 64, disk_mb: 10 }, []), ['memory_mb 64', 'disk_mb 10']);
    assert.deepEqual(limitWords({}, ROWS), []);
  });
});

describe('inert', () => {
  it('spells out control, bidi and invisible characters and keeps newlines, tabs and every script', () => {
    assert.equal(inert('a\x1b]0;owned\x07\x9b2J\x7f\u202eb\u2066\u200b\ufeff\u2028'), 'a\\x1b]0;owned\\x07\\x9b2J\\x7f\\u202eb\\u2066\\u200b\\ufeff\\u2028');
    assert.equal(inert('line\n\ttab café 数据 🎉 $x$ <b>'), 'line\n\ttab café 数据 🎉 $x$ <b>');
    assert.equal(inert('lone \ud800 tag \u{e0001}'), 'lone \\ud800 tag \\U000e0001');
  });
});

describe('LogFrameReader', () => {
  const frame = (stream: number, offset: number, next: number, bytes: number[]): ArrayBuffer => {
    const buffer = new ArrayBuffer(17 + bytes.length);
    const view = new DataView(buffer);
    view.setUint8(0, stream);
    view.setUint32(1, Math.floor(offset / 2 ** 32));
    view.setUint32(5, offset % 2 ** 32);
    view.setUint32(9, Math.floor(next / 2 ** 32));
    view.setUint32(13, next % 2 ** 32);
    new Uint8Array(buffer, 17).set(bytes);
    return buffer;
  };

  it('reads the stream, both offsets and the bytes of a frame as text', () => {
    const reader = new LogFrameReader();
    assert.deepEqual(reader.read(frame(2, 2 ** 40 + 5, 2 ** 40 + 12, [0x6f, 0x6b, 0x0a])), {
      stream: 'stderr',
      offset: 2 ** 40 + 5,
      nextOffset: 2 ** 40 + 12,
      text: 'ok\n'
    });
  });

  it('joins a character split between two frames of a stream, even with another stream between', () => {
    const reader = new LogFrameReader();
    assert.equal(reader.read(frame(1, 0, 7, [0x61, 0xc3]))?.text, 'a');
    assert.equal(reader.read(frame(2, 7, 13, [0x62]))?.text, 'b');
    assert.equal(reader.read(frame(1, 13, 19, [0xa9]))?.text, '\u00e9');
  });

  it('shows bytes that are not UTF-8 as replacement characters and markup as text', () => {
    const reader = new LogFrameReader();
    const markup = Array.from(new TextEncoder().encode('<img src=x onerror=alert(1)>'));
    assert.equal(reader.read(frame(1, 0, 9, [0xff, 0x41]))?.text, '\ufffdA');
    assert.equal(reader.read(frame(1, 9, 50, markup))?.text, '<img src=x onerror=alert(1)>');
  });

  it('refuses a frame shorter than its header and names an unknown stream stdout', () => {
    const reader = new LogFrameReader();
    assert.equal(reader.read(new ArrayBuffer(5)), null);
    assert.equal(reader.read(frame(9, 0, 6, [0x41]))?.stream, 'stdout');
  });
});
