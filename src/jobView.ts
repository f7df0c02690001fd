/**
 * One job in the main area: status and how it ended (or its place in the queue), limits, a chart
 * of CPU % and memory over the whole run (the executor's metric history, then the live stream;
 * labelled axes, memory against its limit), the live log
 * (follows, can be paused, bounded in the DOM), Stop and Delete, and its id to copy.
 */
import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { WorkerAPI, WorkerError } from './api';
import { WorkFiles } from './workFiles';
import { badge, frameThrottled, h } from './dom';
import {
  Job,
  LimitRow,
  LogBuffer,
  SampleSeries,
  chartScales,
  durationOf,
  formatBytes,
  formatCommand,
  formatDuration,
  formatTime,
  inert,
  isFinished,
  jobTitle,
  limitWords,
  placeWords,
  queueWords,
  sizeLabel,
  supersedes
} from './model';

const CHART_HEIGHT = 180;
/** Room for the axes' tick labels and titles: left CPU %, right memory, bottom time. */
const MARGIN = { left: 52, right: 72, top: 12, bottom: 34 };
const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attributes: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined) {
    node.textContent = inert(text);
  }
  return node;
}

export class JobView extends Widget {
  private job: Job;
  private readonly log = new LogBuffer(2000);
  private readonly usage = new SampleSeries();
  private chartWidth = 480;
  private readonly resize: ResizeObserver;
  private following = true;
  private limitRows: LimitRow[] = [];
  private readonly scheduleDraw = frameThrottled(() => this.draw());
  private readonly header: HTMLDivElement;
  private readonly facts: HTMLDListElement;
  private readonly chart: SVGSVGElement;
  private readonly logNode: HTMLPreElement;
  private readonly followButton: HTMLButtonElement;
  private readonly stopButton: HTMLButtonElement;
  private readonly deleteButton: HTMLButtonElement;
  private readonly message: HTMLDivElement;
  private readonly stream: { dispose(): void };
  private readonly files: WorkFiles;
  private readonly ticker: number;

  constructor(
    private readonly api: WorkerAPI,
    job: Job,
    private readonly deleted: (id: string) => void
  ) {
    super();
    this.job = job;
    this.addClass('jw-job-view');
    this.id = `jupyter-worker-job-${job.id}`;
    this.title.closable = true;
    this.header = h('div', { class: 'jw-job-header' });
    this.facts = h('dl', { class: 'jw-facts' });
    this.chart = document.createElementNS(SVG, 'svg') as SVGSVGElement;
    this.chart.setAttribute('class', 'jw-chart');
    this.chart.setAttribute('height', String(CHART_HEIGHT));
    this.chart.setAttribute('role', 'img');
    this.chart.setAttribute('aria-label', 'CPU % (blue, left axis) and memory (orange, right axis) over the whole run');
    this.logNode = h('pre', { class: 'jw-log', tabindex: 0, 'aria-label': 'Job log', 'aria-live': 'off' });
    this.logNode.addEventListener('scroll', () => this.noticeScroll());
    this.followButton = h('button', { class: 'jp-Button jw-button jw-follow', onclick: () => this.setFollowing(!this.following) }, 'Pause');
    this.stopButton = h('button', { class: 'jp-Button jw-button jw-warn jw-stop', onclick: () => void this.stop() }, 'Stop');
    this.deleteButton = h('button', { class: 'jp-Button jw-button jw-danger jw-delete', onclick: () => void this.remove() }, 'Delete');
    this.message = h('div', { class: 'jw-notice', role: 'alert' });
    this.files = new WorkFiles(api, job.id);
    const copy = h('button', { class: 'jp-Button jw-button jw-copy', title: 'Copy the job id', onclick: () => Clipboard.copyToSystem(this.job.id) }, 'Copy id');
    this.node.append(
      this.header,
      h('div', { class: 'jw-actions' }, this.stopButton, this.deleteButton, copy, this.followButton),
      this.message,
      this.facts,
      h('div', { class: 'jw-chart-box' }, this.chart),
      this.logNode,
      this.files.node
    );
    this.stream = api.followJob(job.id, {
      log: (stream, text) => {
        if (stream === 'display') {
          return; // a notebook's rich output (JSON mime bundles), not text for the log view
        }
        this.log.append(stream, text);
        this.scheduleDraw();
      },
      job: updated => this.setJob(updated),
      metrics: metrics => {
        this.usage.addLive(metrics, this.job.started_at);
        this.setJob({ ...this.job, metrics });
      },
      end: ended => {
        this.setJob(ended);
        void this.files.load();
        void this.loadHistory();
      }
    });
    void this.loadHistory();
    this.resize = new ResizeObserver(() => {
      const width = Math.floor(this.chart.parentElement?.clientWidth ?? 0);
      if (width > 0 && Math.abs(width - this.chartWidth) > 2) {
        this.chartWidth = width;
        this.scheduleDraw();
      }
    });
    this.resize.observe(this.node);
    void api.limitTable().then(rows => {
      this.limitRows = rows;
      this.scheduleDraw();
    });
    this.ticker = window.setInterval(() => !isFinished(this.job) && this.scheduleDraw(), 1000);
    this.draw();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.stream.dispose();
    this.resize.disconnect();
    window.clearInterval(this.ticker);
    super.dispose();
  }

  /** The executor's samples of the whole run (none yet, or an executor without history: the
   * chart draws what the stream brings). */
  private async loadHistory(): Promise<void> {
    try {
      this.usage.load(await this.api.metrics(this.job.id));
      this.scheduleDraw();
    } catch {
      // no history served: the live samples still draw
    }
  }

  setJob(job: Job): void {
    if (!supersedes(job, this.job)) {
      return;
    }
    this.job = job;
    this.scheduleDraw();
  }

  private setFollowing(on: boolean): void {
    this.following = on;
    this.followButton.textContent = on ? 'Pause' : 'Follow';
    this.followButton.setAttribute('aria-pressed', String(!on));
    this.scheduleDraw();
  }

  /** Scrolling up pauses following; scrolling back to the bottom resumes it. */
  private noticeScroll(): void {
    const atBottom = this.logNode.scrollHeight - this.logNode.scrollTop - this.logNode.clientHeight < 4;
    if (atBottom !== this.following) {
      this.setFollowing(atBottom);
    }
  }

  private draw(): void {
    const job = this.job;
    this.title.label = inert(jobTitle(job) || job.id.slice(0, 8));
    this.title.caption = inert(`${jobTitle(job)} (${job.id})`);
    this.header.replaceChildren(h('h2', {}, jobTitle(job)), badge(job, 'full'), h('code', { class: 'jw-id' }, job.id));
    const finished = isFinished(job);
    this.stopButton.disabled = finished;
    this.deleteButton.disabled = !finished;
    this.drawFacts();
    this.drawChart();
    if (this.following) {
      this.drawLog();
    }
  }

  private drawFacts(): void {
    const job = this.job;
    const limits = job.limits ?? {};
    const metrics = job.metrics ?? {};
    const ended = isFinished(job);
    const cpuNow = this.usage.latestCpu();
    const cpuPeak = this.usage.peakCpu();
    const memoryLimit = this.usage.memoryLimit ?? (typeof limits.memory_mb === 'number' ? limits.memory_mb * 2 ** 20 : null);
    const ofLimit = memoryLimit ? ` of ${formatBytes(memoryLimit)} limit` : '';
    const peakMemory = metrics.memory_peak_bytes ?? Math.max(0, ...this.usage.samples.map(s => s.memory_bytes));
    const queued = queueWords(job);
    const place = placeWords(job);
    const rows: [string, string][] = [
      ...(queued ? [['Queue', queued] as [string, string]] : []),
      ...(place ? [['Where', place] as [string, string]] : []),
      ['Command', formatCommand(job.command)],
      ['User', job.owner],
      ['Started', formatTime(job.started_at)],
      ['Duration', formatDuration(durationOf(job, Date.now() / 1000))],
      // Once it ended, "now" means nothing: the CPU time and the peaks are what it used.
      ['CPU', `${(metrics.cpu_seconds ?? 0).toFixed(2)} s CPU time${ended ? (cpuPeak !== null ? `, peak ${cpuPeak.toFixed(0)} %` : '') : cpuNow !== null ? `, now ${cpuNow.toFixed(0)} %` : ''}`],
      ['Memory', ended ? `peak ${formatBytes(peakMemory)}${ofLimit}` : `${formatBytes(metrics.memory_bytes)} now, peak ${formatBytes(peakMemory)}${ofLimit}`],
      ...(metrics.disk_bytes ? [['Disk', `${formatBytes(metrics.disk_bytes)} in /work`] as [string, string]] : []),
      ['Limits', limitWords(limits, this.limitRows).join(', ') || 'none'],
      ['Network', job.network]
    ];
    if (ended) {
      rows.push(['Ended', job.status_text ?? job.status.toLowerCase()]);
    }
    this.facts.replaceChildren(...rows.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
  }

  /** The whole run: time since the start below, CPU % of one core on the left, memory on the
   * right (up to the job's limit, drawn dashed, when it has one). */
  private drawChart(): void {
    const job = this.job;
    const width = Math.max(240, this.chartWidth);
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = CHART_HEIGHT - MARGIN.top - MARGIN.bottom;
    const samples = this.usage.samples;
    const start = job.started_at ?? samples[0]?.t ?? Date.now() / 1000;
    const end = job.finished_at ?? (job.started_at ? Date.now() / 1000 : start);
    const scales = chartScales(samples, start, end, this.usage.memoryLimit ?? (typeof job.limits?.memory_mb === 'number' ? job.limits.memory_mb * 2 ** 20 : null), this.usage.cpuLimit, isFinished(job) ? 1 : 10);
    const x = (t: number) => MARGIN.left + (plotW * (t - start)) / scales.span;
    const yOf = (value: number, top: number) => MARGIN.top + plotH - (plotH * Math.min(value, top)) / top;
    const nodes: SVGElement[] = [];
    nodes.push(svg('rect', { class: 'jw-plot', x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH }));
    for (const tick of scales.cpuTicks) {
      const y = yOf(tick.value, scales.cpuTop);
      nodes.push(svg('line', { class: 'jw-grid', x1: MARGIN.left, x2: MARGIN.left + plotW, y1: y, y2: y }));
      nodes.push(svg('text', { class: 'jw-tick jw-cpu-tick', x: MARGIN.left - 4, y: y + 4, 'text-anchor': 'end' }, tick.label));
    }
    for (const tick of scales.memoryTicks) {
      const y = yOf(tick.value, scales.memoryTop);
      nodes.push(svg('text', { class: 'jw-tick jw-memory-tick', x: MARGIN.left + plotW + 4, y: y + 4, 'text-anchor': 'start' }, tick.label));
    }
    for (const tick of scales.timeTicks) {
      const at = x(start + tick.value);
      nodes.push(svg('text', { class: 'jw-tick jw-time-tick', x: at, y: MARGIN.top + plotH + 14, 'text-anchor': 'middle' }, tick.label));
    }
    nodes.push(svg('text', { class: 'jw-axis-title jw-cpu', x: 12, y: MARGIN.top + plotH / 2, transform: `rotate(-90 12 ${MARGIN.top + plotH / 2})`, 'text-anchor': 'middle' }, 'CPU %'));
    const memoryTitle = scales.memoryLimit ? `memory (limit ${sizeLabel(scales.memoryLimit)})` : 'memory';
    // Turned a quarter clockwise, the letters stand to the right of their baseline: x leaves room.
    const right = width - 14;
    nodes.push(svg('text', { class: 'jw-axis-title jw-memory', x: right, y: MARGIN.top + plotH / 2, transform: `rotate(90 ${right} ${MARGIN.top + plotH / 2})`, 'text-anchor': 'middle' }, memoryTitle));
    nodes.push(svg('text', { class: 'jw-axis-title jw-time', x: MARGIN.left + plotW / 2, y: CHART_HEIGHT - 4, 'text-anchor': 'middle' }, 'time since start'));
    if (scales.memoryLimit) {
      const y = yOf(scales.memoryLimit, scales.memoryTop);
      nodes.push(svg('line', { class: 'jw-limit-line', x1: MARGIN.left, x2: MARGIN.left + plotW, y1: y, y2: y }));
    }
    if (samples.length === 0) {
      const words = job.status === 'QUEUED' ? 'not started yet' : isFinished(job) ? 'no samples taken' : 'no samples yet';
      nodes.push(svg('text', { class: 'jw-chart-empty', x: MARGIN.left + plotW / 2, y: MARGIN.top + plotH / 2, 'text-anchor': 'middle' }, words));
    }
    const line = (value: (index: number) => number, top: number, cls: string) => {
      const points = samples.map((s, i) => `${x(s.t).toFixed(1)},${yOf(value(i), top).toFixed(1)}`);
      if (samples.length === 1) {
        points.push(`${(x(samples[0].t) + 2).toFixed(1)},${yOf(value(0), top).toFixed(1)}`); // one sample: a dot
      }
      return svg('polyline', { class: cls, points: points.join(' ') });
    };
    nodes.push(line(i => samples[i].cpu_percent, scales.cpuTop, 'jw-cpu-line'));
    nodes.push(line(i => samples[i].memory_bytes, scales.memoryTop, 'jw-memory-line'));
    this.chart.setAttribute('width', String(width));
    this.chart.setAttribute('viewBox', `0 0 ${width} ${CHART_HEIGHT}`);
    this.chart.replaceChildren(...nodes);
  }

  private drawLog(): void {
    const lines = this.log.all();
    const nodes: Node[] = [];
    if (this.log.dropped > 0) {
      nodes.push(h('span', { class: 'jw-log-notice' }, `[${this.log.dropped} earlier lines not shown]\n`));
    }
    for (const line of lines) {
      // The log is the job's own output, shown as a text node (no terminal obeys it here), as written.
      nodes.push(h('span', { class: line.stream === 'stdout' ? 'jw-stdout' : 'jw-stderr' }, document.createTextNode(line.text + '\n')));
    }
    this.logNode.replaceChildren(...nodes);
    this.logNode.scrollTop = this.logNode.scrollHeight;
  }

  private async stop(): Promise<void> {
    this.stopButton.disabled = true;
    try {
      this.setJob(await this.api.stop(this.job.id));
    } catch (error) {
      this.message.textContent = inert(error instanceof WorkerError ? error.message : String(error));
    }
  }

  private async remove(): Promise<void> {
    const answer = await showDialog({
      title: 'Delete this job?',
      body: inert(`Its record, log and /work folder are removed: ${this.job.name || this.job.id}`),
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this.api.remove(this.job.id);
      this.deleted(this.job.id);
      this.dispose();
    } catch (error) {
      this.message.textContent = inert(error instanceof WorkerError ? error.message : String(error));
    }
  }
}
