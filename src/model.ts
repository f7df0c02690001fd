/**
 * The panel's logic that needs no DOM: job records, the words and colours a status is shown
 * with (the same as the %%worker widget's), formatting, the live job list, CPU sampling, the
 * bounded log and the parsing of the new-job form. Unit-tested under node (src/__tests__).
 */

export type JobStatus = 'QUEUED' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'STOPPED';

/**
 * What a job record holds came from some user (its command, error, name). The panel puts text in
 * the page only as text (textContent, never innerHTML), and through this: characters that forge
 * or hide text (C0 and C1 controls, DEL, bidi marks, embeddings, overrides and isolates,
 * zero-width and other invisible format characters, line and paragraph separators, lone
 * surrogates) are spelled out as \x1b, \u202e; newlines and tabs stay. As formatting.inert does
 * for the CLI and the notebook.
 */
const HIDDEN = /[\0-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]|\udb40[\udc00-\udc7f]/g;

export function inert(text: string): string {
  return text.replace(HIDDEN, found => {
    const code = found.codePointAt(0) ?? 0;
    const hex = code.toString(16);
    return code < 0x100 ? `\\x${hex.padStart(2, '0')}` : code < 0x10000 ? `\\u${hex.padStart(4, '0')}` : `\\U${hex.padStart(8, '0')}`;
  });
}

export const STATUSES: JobStatus[] = ['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'STOPPED'];

export interface Metrics {
  cpu_seconds?: number;
  memory_bytes?: number;
  memory_peak_bytes?: number;
  wall_seconds?: number;
  disk_bytes?: number;
  pids?: number;
  [key: string]: number | undefined;
}

/** A limit's value: a number in its row's unit, a CPU list, or null when not set. */
export type LimitValue = number | string | null;

/** A job's limits keyed by field (the executor's table decides which: see LimitRow). A job
 * record has every field, null when unset. */
export type Limits = Record<string, LimitValue | undefined>;

export interface Job {
  id: string;
  name: string;
  owner: string;
  command: string[];
  status: JobStatus;
  status_text?: string;
  reason?: string | null;
  exit_code?: number | null;
  signal?: number | null;
  error?: string | null;
  stopped_by?: string | null;
  limits: Limits;
  network: string;
  created_at: number;
  started_at?: number | null;
  finished_at?: number | null;
  metrics: Metrics;
  /** While QUEUED: where it stands (1 = next to start) and why it waits, in words. */
  queue?: QueueInfo | null;
  /** Where it runs: 'local' (this host's sandbox) or 'slurm' (a cluster node's). */
  backend?: string;
  /** The cluster node it runs (or ran) on, once the backend placed it. */
  node?: string | null;
  /** What the job asked of the backend (partition, account, qos) and, once known, its
   * slurm_job_id. */
  placement?: Record<string, string> | null;
}

export interface QueueInfo {
  /** 1 = next to start; null for a job waiting in a cluster's queue (its place there is the
   * cluster's, not ours). */
  position: number | null;
  reason: string;
}

/** The %%worker widget's palette (jupyter_worker/widgets.py COLOURS): one job, one look. */
export const STATUS_COLOURS: Record<JobStatus, string> = {
  QUEUED: '#757575',
  RUNNING: '#1976d2',
  COMPLETED: '#2e7d32',
  FAILED: '#c62828',
  STOPPED: '#ef6c00'
};

export function isFinished(job: Job): boolean {
  return job.status === 'COMPLETED' || job.status === 'FAILED' || job.status === 'STOPPED';
}

/** Replies and events can cross (a stop's reply after the job's end event): an ended job's
 * record is never replaced by one from before its end. */
export function supersedes(incoming: Job, current: Job | undefined): boolean {
  return current === undefined || !isFinished(current) || isFinished(incoming);
}

/** "running", or how it ended: "exit code 0", "killed: out of memory (limit 64 MiB)". */
export function statusText(job: Job): string {
  return job.status_text || job.status.toLowerCase();
}

/** The list's badge: one short word per status, so it fits a narrow panel whole. The job's view
 * and the badge's tooltip carry the full words (statusText). */
export const SHORT_STATUS: Record<JobStatus, string> = {
  QUEUED: 'queued',
  RUNNING: 'running',
  COMPLETED: 'done',
  FAILED: 'failed',
  STOPPED: 'stopped'
};

export function shortStatus(job: Pick<Job, 'status'>): string {
  return SHORT_STATUS[job.status];
}

function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' } as Record<number, string>)[n % 10] ?? 'th';
  return `${n}${suffix}`;
}

/** A queued job's place and reason: "next to start: 4 of 4 running slots in use",
 * "3rd in line: you have 2 jobs running, your maximum"; a job in a cluster's queue (no place of
 * ours) by its reason alone: "waiting for resources on the cluster"; null unless it is queued. */
export function queueWords(job: Pick<Job, 'status' | 'queue'>): string | null {
  if (job.status !== 'QUEUED' || !job.queue) {
    return null;
  }
  const { position, reason } = job.queue;
  if (position === null || position === undefined) {
    return reason || 'waiting';
  }
  const place = position <= 1 ? 'next to start' : `${ordinal(position)} in line`;
  return reason ? `${place}: ${reason}` : place;
}

/** Where a job runs, for the list's second line: 'on n2' once a node has it, else null. */
export function nodeWords(job: Pick<Job, 'node'>): string | null {
  return job.node ? `on ${job.node}` : null;
}

/** Where a job runs, for its details: 'Slurm job 123 on n2 (partition debug, account lab)',
 * 'Slurm, not placed yet (partition debug)'; null for a job of this host. */
export function placeWords(job: Pick<Job, 'backend' | 'node' | 'placement'>): string | null {
  if (!job.backend || job.backend === 'local') {
    return job.node ? `on ${job.node}` : null;
  }
  const placement = job.placement ?? {};
  const name = job.backend === 'slurm' ? 'Slurm' : job.backend;
  const asked = PLACEMENT_KEYS.filter(key => placement[key]).map(key => `${PLACEMENT_LABELS[key].toLowerCase()} ${placement[key]}`);
  const id = placement.slurm_job_id ? ` job ${placement.slurm_job_id}` : '';
  const where = job.node ? ` on ${job.node}` : id ? '' : ', not placed yet';
  return `${name}${id}${where}${asked.length ? ` (${asked.join(', ')})` : ''}`;
}

/** Seconds the job has run (to now while it runs); null before it starts. */
export function durationOf(job: Job, nowSeconds: number): number | null {
  if (!job.started_at) {
    return null;
  }
  return Math.max(0, (job.finished_at ?? nowSeconds) - job.started_at);
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null) {
    return '-';
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ${Math.floor(seconds % 60)} s`;
  }
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatBytes(bytes: number | undefined | null): string {
  if (bytes === undefined || bytes === null) {
    return '-';
  }
  if (bytes < 1024) {
    return `${bytes} B`;
  }
  if (bytes < 2 ** 20) {
    return `${(bytes / 1024).toFixed(1)} KiB`;
  }
  const mib = bytes / 2 ** 20;
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib.toFixed(1)} MiB`;
}

export function formatTime(seconds: number | null | undefined): string {
  if (!seconds) {
    return '-';
  }
  const stamp = new Date(seconds * 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${stamp.getFullYear()}-${pad(stamp.getMonth() + 1)}-${pad(stamp.getDate())} ${pad(
    stamp.getHours()
  )}:${pad(stamp.getMinutes())}:${pad(stamp.getSeconds())}`;
}

/** A start time for the list's narrow second line: "14:16" today, else "2026-11-29". */
export function shortTime(seconds: number | null | undefined, nowSeconds: number): string {
  const full = formatTime(seconds);
  if (full === '-') {
    return full;
  }
  return full.slice(0, 10) === formatTime(nowSeconds).slice(0, 10) ? full.slice(11, 16) : full.slice(0, 10);
}

/** An argv as a shell would read it back: words with spaces or quotes are single-quoted. */
export function formatCommand(argv: string[]): string {
  return argv.map(word => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'"'"'`)}'`)).join(' ');
}

const PYTHON = /^python[\d.]*$/;

function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed.slice(trimmed.lastIndexOf('/') + 1) || path;
}

function firstLine(text: string): string {
  const line = text.split('\n').find(l => l.trim() !== '') ?? '';
  return line.trim();
}

function ellipsize(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1)).trimEnd()}…`;
}

/** A command short enough for a title: the program's basename and its first arguments, a
 * multi-line argument by its first line, ellipsized at max characters. A notebook cell's runner
 * (python -m jupyter_worker.cell … -- CODE, python -c RUNNER … -- CODE, python -u -) reads
 * "cell: " and the code's first line instead of the interpreter's path and the runner's argv. */
export function shortCommand(argv: string[], max = 48): string {
  if (argv.length === 0) {
    return '';
  }
  const program = basename(argv[0]);
  if (PYTHON.test(program)) {
    const runner = argv.some((word, i) => (word === '-m' && argv[i + 1] === 'jupyter_worker.cell') || (word === '-c' && /jupyter_worker|\n/.test(argv[i + 1] ?? '')));
    const end = argv.indexOf('--');
    if (runner && end >= 0) {
      return ellipsize(`cell: ${firstLine(argv.slice(end + 1).join(' '))}`, max);
    }
    if (argv.includes('-') && argv.slice(1).every(word => word === '-u' || word === '-')) {
      return 'cell: code on stdin';
    }
  }
  const words = [program, ...argv.slice(1).map(word => (word.includes('\n') ? `${firstLine(word)}…` : word))];
  return ellipsize(formatCommand(words).replace(/\n/g, ' '), max);
}

/** The job's title wherever it is listed: its name (a %%worker cell's is "notebook.ipynb · its
 * first line"), else its short command. Never the full argv. */
export function jobTitle(job: Pick<Job, 'name' | 'command'>): string {
  return job.name || shortCommand(job.command);
}

/** The list's columns; the first two always show, the others from the panel width given. */
export const COLUMNS: { key: string; label: string; minWidth: number }[] = [
  { key: 'status', label: 'Status', minWidth: 0 },
  { key: 'job', label: 'Job', minWidth: 0 },
  { key: 'duration', label: 'Duration', minWidth: 300 },
  { key: 'memory', label: 'Memory', minWidth: 380 },
  { key: 'cpu', label: 'CPU', minWidth: 450 }
];

/** The columns that fit a panel width px wide (secondary ones go first as it narrows). */
export function visibleColumns(width: number): string[] {
  return COLUMNS.filter(column => width >= column.minWidth).map(column => column.key);
}

/** When a job that ends raises a notification (the Settings editor's "Worker jobs" entry). */
export type NotifyMode = 'all' | 'failures' | 'none';

export const NOTIFY_MODES: NotifyMode[] = ['all', 'failures', 'none'];

/** Whether a job that just ended raises a notification: never while the user watches it (its
 * widget or view is on screen); with 'failures' only a failed job; with 'all' every ending. An
 * unknown mode is read as the default, 'failures'. */
export function shouldNotify(job: Pick<Job, 'status'>, mode: string, watched: boolean): boolean {
  if (watched || !isFinished(job as Job)) {
    return false;
  }
  const chosen: NotifyMode = (NOTIFY_MODES as string[]).includes(mode) ? (mode as NotifyMode) : 'failures';
  return chosen === 'all' || (chosen === 'failures' && job.status === 'FAILED');
}

/** A command line split into argv the way a POSIX shell splits words (quotes and backslashes). */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") {
        quote = null;
      } else {
        word += c;
      }
    } else if (c === '\\' && i + 1 < line.length && (quote === null || '"\\$`'.includes(line[i + 1]))) {
      word += line[++i];
      inWord = true;
    } else if (quote === '"') {
      if (c === '"') {
        quote = null;
      } else {
        word += c;
      }
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) {
        words.push(word);
      }
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote !== null) {
    throw new Error(`the command has an unclosed ${quote === '"' ? 'double' : 'single'} quote`);
  }
  if (inWord) {
    words.push(word);
  }
  return words;
}

export type SortKey = 'newest' | 'oldest' | 'name' | 'status' | 'duration' | 'cpu' | 'memory';

export const SORT_LABELS: Record<SortKey, string> = {
  newest: 'Newest first',
  oldest: 'Oldest first',
  name: 'Name',
  status: 'Status',
  duration: 'Duration',
  cpu: 'CPU time',
  memory: 'Memory'
};

/** The jobs the panel knows, kept current from the server's job-list stream. */
export class JobList {
  private jobs = new Map<string, Job>();

  get size(): number {
    return this.jobs.size;
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  /** Adds or replaces a job (unless the record is staler than the one kept); returns the one before. */
  upsert(job: Job): Job | undefined {
    const before = this.jobs.get(job.id);
    if (supersedes(job, before)) {
      this.jobs.set(job.id, job);
    }
    return before;
  }

  remove(id: string): void {
    this.jobs.delete(id);
  }

  count(status: JobStatus): number {
    let n = 0;
    this.jobs.forEach(job => (n += job.status === status ? 1 : 0));
    return n;
  }

  view(filter: JobStatus | 'ALL', sort: SortKey, nowSeconds: number): Job[] {
    const shown = [...this.jobs.values()].filter(job => filter === 'ALL' || job.status === filter);
    const key = (job: Job): number | string => {
      switch (sort) {
        case 'newest':
          return -job.created_at;
        case 'oldest':
          return job.created_at;
        case 'name':
          return (job.name || formatCommand(job.command)).toLowerCase();
        case 'status':
          return STATUSES.indexOf(job.status);
        case 'duration':
          return -(durationOf(job, nowSeconds) ?? -1);
        case 'cpu':
          return -(job.metrics?.cpu_seconds ?? -1);
        case 'memory':
          return -(job.metrics?.memory_peak_bytes ?? job.metrics?.memory_bytes ?? -1);
      }
    };
    return shown.sort((a, b) => {
      const [ka, kb] = [key(a), key(b)];
      if (ka < kb) {
        return -1;
      }
      return ka > kb ? 1 : b.created_at - a.created_at;
    });
  }
}

/** CPU % (of one core) between successive metrics, and a bounded series for the chart. */
export class UsageSeries {
  readonly cpu: number[] = [];
  readonly memoryMiB: number[] = [];
  private last: { wall: number; cpu: number } | null = null;

  constructor(readonly points = 60) {}

  add(metrics: Metrics): void {
    const wall = metrics.wall_seconds ?? 0;
    const cpu = metrics.cpu_seconds ?? 0;
    if (this.last !== null && wall <= this.last.wall) {
      return;
    }
    const percent = this.last ? (100 * (cpu - this.last.cpu)) / (wall - this.last.wall) : 0;
    this.last = { wall, cpu };
    this.cpu.push(Math.max(0, percent));
    this.memoryMiB.push((metrics.memory_bytes ?? 0) / 2 ** 20);
    if (this.cpu.length > this.points) {
      this.cpu.shift();
      this.memoryMiB.shift();
    }
  }

  get latestCpu(): number | null {
    return this.cpu.length > 1 ? this.cpu[this.cpu.length - 1] : null;
  }
}

/** One sample of the executor's metric history (GET jobs/{id}/metrics). */
export interface Sample {
  t: number;
  cpu_percent: number;
  memory_bytes: number;
  pids?: number;
}

export interface MetricHistory {
  samples: Sample[];
  memory_limit_bytes: number | null;
  cpu_limit_percent: number | null;
}

/** A job's samples for the chart: the executor's history, then what the job's stream adds while
 * the view is open (CPU % from successive cumulative CPU seconds). */
export class SampleSeries {
  samples: Sample[] = [];
  memoryLimit: number | null = null;
  cpuLimit: number | null = null;
  private last: { wall: number; cpu: number } | null = null;

  /** The history as served: replaces the samples before its last one, keeps later live ones. */
  load(history: MetricHistory): void {
    const loaded = [...history.samples].sort((a, b) => a.t - b.t);
    const end = loaded.length ? loaded[loaded.length - 1].t : -Infinity;
    this.samples = [...loaded, ...this.samples.filter(s => s.t > end)];
    this.memoryLimit = history.memory_limit_bytes ?? this.memoryLimit;
    this.cpuLimit = history.cpu_limit_percent ?? this.cpuLimit;
  }

  /** A metrics event of the job's stream; startedAt (unix s) places it in time. */
  addLive(metrics: Metrics, startedAt: number | null | undefined): void {
    const wall = metrics.wall_seconds;
    if (wall === undefined || !startedAt) {
      return;
    }
    const cpu = metrics.cpu_seconds ?? 0;
    const previous = this.last;
    this.last = { wall, cpu };
    if (previous === null || wall <= previous.wall) {
      return; // CPU % needs two readings
    }
    const t = startedAt + wall;
    if (this.samples.length && t <= this.samples[this.samples.length - 1].t) {
      return;
    }
    const percent = Math.max(0, (100 * (cpu - previous.cpu)) / (wall - previous.wall));
    this.samples.push({ t, cpu_percent: percent, memory_bytes: metrics.memory_bytes ?? 0 });
  }

  peakCpu(): number | null {
    return this.samples.length ? Math.max(...this.samples.map(s => s.cpu_percent)) : null;
  }

  latestCpu(): number | null {
    return this.samples.length ? this.samples[this.samples.length - 1].cpu_percent : null;
  }
}

/** The smallest "round" number (1, 2, 2.5, 5 times a power of ten) at or above value. */
export function niceCeiling(value: number): number {
  if (!(value > 0)) {
    return 1;
  }
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value * (1 - 1e-9)) {
      return step * power;
    }
  }
  return 10 * power;
}

export interface Tick {
  value: number;
  label: string;
}

/** A duration on the time axis: "0 s", "45 s", "2 min", "1 h 30 min". */
export function clockLabel(seconds: number): string {
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 3600) {
    const m = Math.floor(seconds / 60);
    const s = Math.round(seconds % 60);
    return s ? `${m} min ${s} s` : `${m} min`;
  }
  const h = Math.floor(seconds / 3600);
  const m = Math.round((seconds % 3600) / 60);
  return m ? `${h} h ${m} min` : `${h} h`;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

/** Time-axis ticks from 0 to span seconds, at most about `most` of them, at round steps. */
export function timeTicks(span: number, most = 5): Tick[] {
  const step = TIME_STEPS.find(s => span / s <= most) ?? Math.ceil(span / most / 86400) * 86400;
  const ticks: Tick[] = [];
  for (let v = 0; v <= span + 1e-9; v += step) {
    ticks.push({ value: v, label: clockLabel(v) });
  }
  return ticks;
}

/** A size for an axis: "0", "256 MiB", "1.5 GiB" (no decimals where none are needed). */
export function sizeLabel(bytes: number): string {
  if (bytes === 0) {
    return '0';
  }
  const mib = bytes / 2 ** 20;
  if (mib >= 1024) {
    return `${+(mib / 1024).toFixed(1)} GiB`;
  }
  return mib >= 1 ? `${+mib.toFixed(1)} MiB` : `${+(bytes / 1024).toFixed(1)} KiB`;
}

export interface ChartScales {
  /** Seconds from the job's start the x axis spans. */
  span: number;
  cpuTop: number;
  memoryTop: number;
  /** The memory limit in bytes when the job has one (drawn as a line at the top). */
  memoryLimit: number | null;
  timeTicks: Tick[];
  cpuTicks: Tick[];
  memoryTicks: Tick[];
}

/** The chart's axes for samples from start (unix s) to end: time since the start (at least
 * minSpan seconds: a running job's axis starts at 10 s and grows, an ended one's is its run); CPU % from 0
 * to at least 100 (one core) or the CPU limit; memory from 0 to the job's limit when it has one
 * (so the line shows how close it came), else to a round figure above the peak. */
export function chartScales(samples: Sample[], start: number, end: number, memoryLimit: number | null, cpuLimit: number | null, minSpan = 10): ChartScales {
  const span = Math.max(minSpan, end - start, ...samples.map(s => s.t - start));
  const cpuPeak = Math.max(0, ...samples.map(s => s.cpu_percent));
  const cpuTop = niceCeiling(Math.max(100, cpuLimit ?? 0, cpuPeak));
  const memoryPeak = Math.max(0, ...samples.map(s => s.memory_bytes));
  const memoryTop = memoryLimit && memoryLimit >= memoryPeak ? memoryLimit : niceCeiling(Math.max(memoryPeak, 2 ** 20) / 2 ** 20) * 2 ** 20;
  const quarters = (top: number, label: (v: number) => string) => [0, 0.5, 1].map(f => ({ value: top * f, label: label(top * f) }));
  return {
    span,
    cpuTop,
    memoryTop,
    memoryLimit: memoryLimit ?? null,
    timeTicks: timeTicks(span),
    cpuTicks: quarters(cpuTop, v => `${+v.toFixed(0)} %`),
    memoryTicks: quarters(memoryTop, sizeLabel)
  };
}

/** SVG polyline points for values scaled to top, spread over width, the newest at the right. */
export function chartPoints(values: number[], top: number, width: number, height: number, points: number): string {
  const step = width / Math.max(1, points - 1);
  const offset = points - values.length;
  const scale = top > 0 ? top : 1;
  return values
    .map((v, i) => `${((offset + i) * step).toFixed(1)},${(height - (height * Math.min(v, scale)) / scale).toFixed(1)}`)
    .join(' ');
}

/** The streams of a log chunk's binary frame, by number (jupyter_worker/sandbox/output.py). */
export const LOG_STREAMS: Record<number, string> = { 1: 'stdout', 2: 'stderr', 3: 'notice', 4: 'display' };
/** A binary frame of the job stream websocket (?frames=binary): stream (1 byte), offset and
 * next_offset (8 bytes each, big-endian), then the chunk's bytes as the job wrote them. */
export const LOG_FRAME_HEADER = 17;

export interface LogFrame {
  stream: string;
  offset: number;
  nextOffset: number;
  text: string;
}

/** Reads the binary log frames of one job's stream, in order, as text. Each stream has its own
 * decoder that carries a character split between frames over to the next one (also across a
 * reconnect, which resumes at the next frame's offset), and shows bytes that are not UTF-8 as
 * U+FFFD. The text is for text nodes only (never HTML). Null for a frame too short to be one. */
export class LogFrameReader {
  private decoders = new Map<string, InstanceType<typeof TextDecoder>>();

  read(frame: ArrayBuffer): LogFrame | null {
    if (frame.byteLength < LOG_FRAME_HEADER) {
      return null;
    }
    const view = new DataView(frame);
    const stream = LOG_STREAMS[view.getUint8(0)] ?? 'stdout';
    // offsets are at most 2^53 (docs/protocol.md): exact as numbers
    const offset = view.getUint32(1) * 2 ** 32 + view.getUint32(5);
    const nextOffset = view.getUint32(9) * 2 ** 32 + view.getUint32(13);
    let decoder = this.decoders.get(stream);
    if (decoder === undefined) {
      decoder = new TextDecoder('utf-8');
      this.decoders.set(stream, decoder);
    }
    const text = decoder.decode(new Uint8Array(frame, LOG_FRAME_HEADER), { stream: true });
    return { stream, offset, nextOffset, text };
  }
}

export interface LogLine {
  stream: string;
  text: string;
}

/** The log as lines, stdout and stderr told apart, keeping only the last maxLines. */
export class LogBuffer {
  lines: LogLine[] = [];
  dropped = 0;
  private partial = new Map<string, string>();

  constructor(readonly maxLines = 2000) {}

  append(stream: string, text: string): void {
    const pieces = ((this.partial.get(stream) ?? '') + text).split('\n');
    this.partial.set(stream, pieces.pop() ?? '');
    for (const piece of pieces) {
      this.lines.push({ stream, text: piece });
    }
    const excess = this.lines.length - this.maxLines;
    if (excess > 0) {
      this.lines.splice(0, excess);
      this.dropped += excess;
    }
  }

  /** The complete lines and any unfinished line of each stream. */
  all(): LogLine[] {
    const tails = [...this.partial.entries()].filter(([, text]) => text !== '');
    return [...this.lines, ...tails.map(([stream, text]) => ({ stream, text }))];
  }
}

/** One row of the executor's table of limits (jupyter_worker/limits.json), as `capabilities`
 * serves it: how the limit is named and typed, and this user's default and maximum. */
export interface LimitRow {
  field: string;
  kind: 'mib' | 'rate' | 'count' | 'percent' | 'duration' | 'cpu_list';
  label: string;
  what: string;
  unit: string;
  flag: string;
  words: string;
  low: number | null;
  high: number | null;
  default_setting: string | null;
  max_setting: string | null;
  default: LimitValue;
  maximum: LimitValue;
}

/** The executor's settings as they apply to this user (`capabilities`' policy). */
export interface Policy {
  limits?: LimitRow[];
  default_network?: string;
  network_modes?: string[];
  [setting: string]: unknown;
}

/** A value with its row's unit, as the executor words it: '512 MiB', '90 s', '0-1'. */
export function showLimit(row: Pick<LimitRow, 'unit'>, value: LimitValue): string {
  return value === null ? 'none' : `${value} ${row.unit}`.trim();
}

/** The set limits in words, in the table's order: ['Memory 512 MiB', 'Timeout 60 s']. A field
 * the table does not name (no executor answered) is shown by its field name. */
export function limitWords(limits: Limits, rows: LimitRow[]): string[] {
  const named = new Set(rows.map(row => row.field));
  const words = rows.filter(row => limits[row.field] != null).map(row => `${row.label} ${showLimit(row, limits[row.field] ?? null)}`);
  for (const [field, value] of Object.entries(limits)) {
    if (!named.has(field) && value != null) {
      words.push(`${field} ${value}`);
    }
  }
  return words;
}

export interface LimitField {
  key: string;
  label: string;
  placeholder: string;
  hint: string;
  help: string;
}

/** The form's field for each limit: a text field (values take units, '2G', '10m', as on the
 * command line), its placeholder the default a job asking for nothing gets, its hint the maximum. */
export function limitFields(policy: Policy): LimitField[] {
  return (policy.limits ?? []).map(row => {
    const fallback = row.default;
    return {
      key: row.field,
      label: row.unit ? `${row.label} (${row.unit})` : row.label,
      placeholder: fallback === null ? 'no limit' : `default ${fallback}`,
      hint: row.maximum === null ? '' : `max ${showLimit(row, row.maximum)}`,
      help: row.words
    };
  });
}

/** What the form offers as "Where": the backends `capabilities` names (the local sandbox
 * always; Slurm when the executor has it on) and Slurm's partitions. */
export interface Backends {
  /** Slurm is offered: the form shows its "Where" choice. */
  offered: boolean;
  partitions: string[];
  defaultPartition: string;
}

/** The part of a `capabilities` answer that says where jobs may run. The server may carry it at
 * the top level or inside the executor's policy: either is read. */
export interface BackendCapabilities {
  backends?: string[] | null;
  slurm?: { partitions?: string[] | null; default_partition?: string | null } | null;
  policy?: { backends?: unknown; slurm?: unknown; [setting: string]: unknown } | null;
}

export function backendChoice(capabilities: BackendCapabilities | null | undefined): Backends {
  const policy = capabilities?.policy ?? {};
  const backends = capabilities?.backends ?? (Array.isArray(policy.backends) ? (policy.backends as string[]) : []);
  const slurm = capabilities?.slurm ?? (policy.slurm as BackendCapabilities['slurm']) ?? {};
  const offered = Array.isArray(backends) && backends.includes('slurm');
  const partitions = offered && Array.isArray(slurm.partitions) ? slurm.partitions.filter(p => typeof p === 'string' && p !== '') : [];
  return { offered, partitions, defaultPartition: offered ? (slurm.default_partition ?? '') : '' };
}

export const PLACEMENT_KEYS = ['partition', 'account', 'qos'] as const;
export type PlacementKey = (typeof PLACEMENT_KEYS)[number];
export const PLACEMENT_LABELS: Record<PlacementKey, string> = { partition: 'Partition', account: 'Account', qos: 'QoS' };
/** A Slurm name as the executor takes it (jupyter_worker/spec.py Placement). */
const SLURM_NAME = /^[A-Za-z0-9_.+-]{1,64}$/;

export interface JobForm {
  command: string;
  name: string;
  network: string;
  limits: Record<string, string>;
  /** The folder the job runs in: a path relative to the server's root, as the file browser
   * shows it ('' is the root itself). */
  folder: string;
  /** SRC:DST[:rw] mounts, one a line or comma-separated. */
  mounts: string;
  /** Where: 'local' or '' (this host, the default) or 'slurm'. */
  backend?: string;
  /** Slurm's partition, account and QoS ('' = the cluster's default); sent only with Slurm. */
  partition?: string;
  account?: string;
  qos?: string;
}

/** The form's mounts as the REST body's SRC:DST[:ro|:rw] strings, or an Error naming a malformed
 * one. The server takes relative paths from the job's folder and checks the rest. */
export function parseMounts(text: string): string[] {
  const mounts = text
    .split(/[\n,]/)
    .map(mount => mount.trim())
    .filter(mount => mount !== '');
  for (const mount of mounts) {
    const parts = mount.split(':');
    const mode = parts.length === 3 ? parts.pop() : 'ro';
    if (parts.length !== 2 || !parts.every(part => part !== '') || (mode !== 'ro' && mode !== 'rw')) {
      throw new Error(`mount: '${mount}' is not SRC:DST, SRC:DST:ro or SRC:DST:rw`);
    }
  }
  return mounts;
}

/** A contents path as the form shows and sends it: no trailing slash ('' is the root). A leading
 * one stays, so that the server refuses an absolute path rather than taking it from the root. */
export function contentsFolder(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, '') : path;
}

/** The form's folder: the file browser's current folder, followed as the user browses until
 * they type their own (then kept until the form starts a job). */
export class FollowedFolder {
  value = '';
  private typed = false;

  /** The file browser moved to path. */
  browsed(path: string): void {
    if (!this.typed) {
      this.value = contentsFolder(path);
    }
  }

  /** The user typed text into the field. */
  typedIn(text: string): void {
    this.value = text;
    this.typed = true;
  }

  /** Follow the file browser again (at path, where it is now). */
  follow(path: string): void {
    this.typed = false;
    this.browsed(path);
  }
}

/** The REST body for the form, or an Error saying what is wrong. Limits go as typed ('2G',
 * '10m', '512'): the executor parses them as it does the CLI's flags and names a bad one; an
 * empty field is left out, so the job gets the executor's default. */
export function jobRequest(form: JobForm, fields: LimitField[]): Record<string, unknown> {
  const command = splitCommand(form.command);
  if (command.length === 0) {
    throw new Error('give a command to run');
  }
  const limits: Record<string, string> = {};
  for (const field of fields) {
    const text = (form.limits[field.key] ?? '').trim();
    if (text !== '') {
      limits[field.key] = text;
    }
  }
  const mounts = parseMounts(form.mounts);
  const body: Record<string, unknown> = { command, limits, folder: contentsFolder(form.folder.trim()) };
  if (mounts.length > 0) {
    body.mounts = mounts;
  }
  if (form.name.trim()) {
    body.name = form.name.trim();
  }
  if (form.network) {
    body.network = form.network;
  }
  const backend = (form.backend ?? '').trim();
  if (backend !== '' && backend !== 'local') {
    body.backend = backend;
    const placement: Record<string, string> = {};
    for (const key of PLACEMENT_KEYS) {
      const value = (form[key] ?? '').trim();
      if (value === '') {
        continue;
      }
      if (!SLURM_NAME.test(value)) {
        throw new Error(`${PLACEMENT_LABELS[key].toLowerCase()}: '${value}' is not a Slurm name (letters, digits, _ . + -; at most 64)`);
      }
      placement[key] = value;
    }
    if (Object.keys(placement).length > 0) {
      body.placement = placement;
    }
  }
  return body;
}
