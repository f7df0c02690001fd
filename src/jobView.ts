/**
 * One job in the main area: status and how it ended, limits, a CPU/memory chart, the live log
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
  UsageSeries,
  chartPoints,
  durationOf,
  formatBytes,
  formatCommand,
  formatDuration,
  formatTime,
  inert,
  isFinished,
  limitWords,
  supersedes
} from './model';

const CHART_WIDTH = 320;
const CHART_HEIGHT = 60;
const SVG = 'http://www.w3.org/2000/svg';

export class JobView extends Widget {
  private job: Job;
  private readonly log = new LogBuffer(2000);
  private readonly usage = new UsageSeries(60);
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
    this.chart.setAttribute('width', String(CHART_WIDTH));
    this.chart.setAttribute('height', String(CHART_HEIGHT));
    this.chart.setAttribute('role', 'img');
    this.chart.setAttribute('aria-label', 'CPU % (blue) and memory (orange) over the last minute');
    this.logNode = h('pre', { class: 'jw-log', tabindex: 0, 'aria-label': 'Job log', 'aria-live': 'off' });
    this.logNode.addEventListener('scroll', () => this.noticeScroll());
    this.followButton = h('button', { class: 'jp-Button jw-follow', onclick: () => this.setFollowing(!this.following) }, 'Pause');
    this.stopButton = h('button', { class: 'jp-Button jp-mod-warn jw-stop', onclick: () => void this.stop() }, 'Stop');
    this.deleteButton = h('button', { class: 'jp-Button jw-delete', onclick: () => void this.remove() }, 'Delete');
    this.message = h('div', { class: 'jw-notice', role: 'alert' });
    this.files = new WorkFiles(api, job.id);
    const copy = h('button', { class: 'jp-Button jw-copy', title: 'Copy the job id', onclick: () => Clipboard.copyToSystem(this.job.id) }, 'Copy id');
    this.node.append(
      this.header,
      h('div', { class: 'jw-actions' }, this.stopButton, this.deleteButton, copy, this.followButton),
      this.message,
      this.facts,
      h('div', { class: 'jw-chart-box' }, this.chart, h('span', { class: 'jw-legend' }, h('span', { class: 'jw-cpu' }, 'CPU %'), ' ', h('span', { class: 'jw-memory' }, 'memory'))),
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
        this.usage.add(metrics);
        this.setJob({ ...this.job, metrics });
      },
      end: ended => {
        this.setJob(ended);
        void this.files.load();
      }
    });
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
    window.clearInterval(this.ticker);
    super.dispose();
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
    this.title.label = inert(job.name || job.id.slice(0, 8));
    this.header.replaceChildren(h('h2', {}, job.name || formatCommand(job.command)), badge(job), h('code', { class: 'jw-id' }, job.id));
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
    const rows: [string, string][] = [
      ['Command', formatCommand(job.command)],
      ['User', job.owner],
      ['Started', formatTime(job.started_at)],
      ['Duration', formatDuration(durationOf(job, Date.now() / 1000))],
      ['CPU', `${(metrics.cpu_seconds ?? 0).toFixed(2)} s${this.usage.latestCpu !== null && !isFinished(job) ? `, now ${this.usage.latestCpu.toFixed(0)}%` : ''}`],
      ['Memory', `${formatBytes(metrics.memory_bytes)} now, ${formatBytes(metrics.memory_peak_bytes)} peak`],
      ...(metrics.disk_bytes ? [['Disk', `${formatBytes(metrics.disk_bytes)} in /work`] as [string, string]] : []),
      ['Limits', limitWords(limits, this.limitRows).join(', ') || 'none'],
      ['Network', job.network]
    ];
    if (isFinished(job)) {
      rows.push(['Ended', job.status_text ?? job.status.toLowerCase()]);
    }
    this.facts.replaceChildren(...rows.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
  }

  private drawChart(): void {
    const top = Math.max(100, ...this.usage.cpu);
    const memoryLimit = this.job.limits?.memory_mb;
    const memoryTop = typeof memoryLimit === 'number' ? memoryLimit : Math.max(1, ...this.usage.memoryMiB);
    const line = (values: number[], scale: number, cls: string) => {
      const node = document.createElementNS(SVG, 'polyline');
      node.setAttribute('class', cls);
      node.setAttribute('points', chartPoints(values, scale, CHART_WIDTH, CHART_HEIGHT, this.usage.points));
      return node;
    };
    this.chart.replaceChildren(line(this.usage.cpu, top, 'jw-cpu-line'), line(this.usage.memoryMiB, memoryTop, 'jw-memory-line'));
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
