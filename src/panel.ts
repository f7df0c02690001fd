/**
 * The "Worker jobs" side panel: the user's jobs, live from the server's job-list stream, with
 * a status filter, sorting, paging from the server, and the new-job form. Its columns follow its
 * width (a ResizeObserver: status and job always, duration, memory and CPU as room allows).
 */
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { Capabilities, WorkerAPI, WorkerError } from './api';
import { badge, frameThrottled, h } from './dom';
import { NewJobForm } from './form';
import {
  COLUMNS,
  Job,
  JobList,
  JobStatus,
  SORT_LABELS,
  STATUSES,
  SortKey,
  durationOf,
  formatBytes,
  formatCommand,
  formatDuration,
  formatTime,
  inert,
  isFinished,
  jobTitle,
  nodeWords,
  queueWords,
  shortTime,
  visibleColumns
} from './model';

const PAGE = 100;

export class JobsPanel extends Widget {
  readonly jobs = new JobList();
  private filter: JobStatus | 'ALL' = 'ALL';
  private sort: SortKey = 'newest';
  private cursor: number | null = null;
  private readonly scheduleDraw = frameThrottled(() => this.draw());
  private readonly body: HTMLTableSectionElement;
  private readonly table: HTMLTableElement;
  private readonly resize: ResizeObserver;
  private readonly more: HTMLButtonElement;
  private readonly notice: HTMLDivElement;
  private readonly form: NewJobForm;
  private readonly watcher: { dispose(): void };
  private readonly ticker: number;
  private readonly _opened = new Signal<this, string>(this);
  private readonly _finished = new Signal<this, Job>(this);
  private readonly _changed = new Signal<this, void>(this);

  constructor(readonly api: WorkerAPI) {
    super();
    this.id = 'jupyter-worker-panel';
    this.addClass('jw-panel');
    this.title.caption = 'Worker jobs';
    this.notice = h('div', { class: 'jw-notice', role: 'status' });
    this.form = new NewJobForm(api, job => this.take(job));
    this.body = h('tbody');
    this.more = h('button', { class: 'jp-Button jw-button jw-more', onclick: () => void this.loadPage() }, 'Load more');
    this.table = h('table', { class: 'jw-jobs', 'aria-label': 'Worker jobs' }, this.head(), this.body);
    this.node.append(
      h('header', { class: 'jw-panel-header' }, h('h2', {}, 'Worker jobs'), this.toolbar()),
      this.notice,
      this.form.node,
      this.table,
      this.more
    );
    this.resize = new ResizeObserver(() => this.fitColumns());
    this.resize.observe(this.node);
    this.watcher = api.watchJobs(
      job => this.take(job),
      connected => {
        if (connected) {
          void this.reload();
        }
      }
    );
    this.ticker = window.setInterval(() => {
      if (this.jobs.count('RUNNING') > 0) {
        this.scheduleDraw();
      }
    }, 1000);
    void this.checkExecutor();
  }

  /** A row was chosen: the job's id. */
  get opened(): ISignal<this, string> {
    return this._opened;
  }

  /** A job seen running or queued in this session has ended. */
  get finished(): ISignal<this, Job> {
    return this._finished;
  }

  /** The list changed (for the status bar's count). */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  showForm(): void {
    this.form.show();
  }

  /** The file browser is now at path (a contents path): the new-job form's folder follows it. */
  browsed(path: string): void {
    this.form.browsed(path);
  }

  /** Activating the panel (its tab, the palette) puts the keyboard in the form when it is open. */
  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    if (!this.form.isHidden) {
      this.form.focusCommand();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.watcher.dispose();
    this.resize.disconnect();
    window.clearInterval(this.ticker);
    super.dispose();
  }

  /** Secondary columns give way as the panel narrows (JupyterLab's default side-panel width
   * shows status, job and duration). */
  private fitColumns(): void {
    const width = this.node.clientWidth;
    if (width === 0) {
      return; // hidden: keep what it had
    }
    const shown = visibleColumns(width);
    if (this.table.dataset.columns === shown.join(' ')) {
      return;
    }
    for (const column of COLUMNS) {
      this.table.classList.toggle(`jw-hide-${column.key}`, !shown.includes(column.key));
    }
    this.table.dataset.columns = shown.join(' ');
    this.scheduleDraw(); // the rows' second line carries the duration while its column is hidden
  }

  take(job: Job): void {
    const before = this.jobs.upsert(job);
    if (before && !isFinished(before) && isFinished(job)) {
      this._finished.emit(job);
    }
    this.scheduleDraw();
  }

  forget(id: string): void {
    this.jobs.remove(id);
    this.scheduleDraw();
  }

  async reload(): Promise<void> {
    this.cursor = null;
    await this.loadPage(true);
  }

  private async loadPage(fresh = false): Promise<void> {
    try {
      const page = await this.api.listJobs(this.filter, fresh ? null : this.cursor, PAGE);
      page.jobs.forEach(job => this.take(job));
      this.cursor = page.cursor;
      this.more.hidden = page.cursor === null;
      this.say('');
    } catch (error) {
      this.say(error instanceof WorkerError ? error.message : String(error));
    }
  }

  private async checkExecutor(): Promise<void> {
    try {
      const capabilities: Capabilities = await this.api.capabilities();
      this.form.configure(capabilities);
      if (!capabilities.executor.available) {
        this.say(`No executor: ${capabilities.executor.problem ?? 'it does not answer'}`);
      }
    } catch (error) {
      this.say(String(error));
    }
  }

  private say(message: string): void {
    this.notice.textContent = inert(message);
    this.notice.hidden = message === '';
  }

  private toolbar(): HTMLElement {
    const filter = h('select', { class: 'jw-filter', 'aria-label': 'Show jobs with status' });
    filter.append(h('option', { value: 'ALL' }, 'All jobs'), ...STATUSES.map(s => h('option', { value: s }, s.toLowerCase())));
    filter.addEventListener('change', () => {
      this.filter = filter.value as JobStatus | 'ALL';
      this.scheduleDraw();
      void this.reload();
    });
    const sort = h('select', { class: 'jw-sort', 'aria-label': 'Sort jobs by' });
    sort.append(...Object.entries(SORT_LABELS).map(([key, label]) => h('option', { value: key }, label)));
    sort.addEventListener('change', () => {
      this.sort = sort.value as SortKey;
      this.scheduleDraw();
    });
    const create = h('button', { class: 'jp-Button jw-button jw-primary jw-new', onclick: () => this.form.toggle() }, 'New job');
    return h('div', { class: 'jw-toolbar' }, create, filter, sort);
  }

  private head(): HTMLTableSectionElement {
    return h('thead', {}, h('tr', {}, ...COLUMNS.map(c => h('th', { scope: 'col', class: `jw-col-${c.key}` }, c.label))));
  }

  private draw(): void {
    const now = Date.now() / 1000;
    const rows = this.jobs.view(this.filter, this.sort, now).map(job => this.row(job, now));
    this.body.replaceChildren(...rows);
    if (rows.length === 0) {
      this.body.append(h('tr', {}, h('td', { colspan: COLUMNS.length, class: 'jw-empty' }, 'No jobs yet: start one with New job or %%worker.')));
    }
    this._changed.emit();
  }

  private row(job: Job, now: number): HTMLTableRowElement {
    const open = () => this._opened.emit(job.id);
    const label = jobTitle(job);
    const cpu = job.metrics?.cpu_seconds;
    const queued = queueWords(job);
    const command = formatCommand(job.command);
    // The tooltip: the name, then the command's first 300 characters (a cell's whole code is not).
    const tip = `${job.name ? `${job.name}\n` : ''}${command.length > 300 ? `${command.slice(0, 299)}…` : command}\nstarted ${formatTime(job.started_at)}`;
    const row = h(
      'tr',
      {
        class: 'jw-row',
        tabindex: 0,
        'data-job-id': job.id,
        'aria-label': `${label}: ${job.status.toLowerCase()}`,
        onclick: open,
        onkeydown: (event: Event) => {
          if ((event as KeyboardEvent).key === 'Enter' || (event as KeyboardEvent).key === ' ') {
            event.preventDefault();
            open();
          }
        }
      },
      h('td', { class: 'jw-col-status' }, badge(job)),
      h('td', { class: 'jw-col-job jw-name', title: tip },
        h('div', { class: 'jw-label' }, label),
        h('div', { class: queued ? 'jw-sub jw-queue' : 'jw-sub' }, queued ?? [...(this.table.classList.contains('jw-hide-duration') && job.started_at ? [formatDuration(durationOf(job, now))] : []), job.owner, shortTime(job.started_at, now), ...(nodeWords(job) ? [nodeWords(job)] : [])].join(' · '))),
      h('td', { class: 'jw-col-duration' }, formatDuration(durationOf(job, now))),
      h('td', { class: 'jw-col-memory', title: 'peak memory' }, formatBytes(job.metrics?.memory_peak_bytes ?? job.metrics?.memory_bytes)),
      h('td', { class: 'jw-col-cpu', title: 'CPU time' }, cpu === undefined ? '-' : `${cpu.toFixed(2)} s`)
    );
    return row;
  }
}
