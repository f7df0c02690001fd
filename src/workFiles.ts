/**
 * The files a job left in its /work: folders to open, regular files to download; links and
 * other special files are shown for what they are and never followed (the server refuses).
 */
import { WorkerAPI, WorkerError } from './api';
import { h } from './dom';
import { formatBytes } from './model';

export class WorkFiles {
  readonly node: HTMLElement;
  private path = '';
  private readonly list: HTMLUListElement;
  private readonly where: HTMLElement;

  constructor(
    private readonly api: WorkerAPI,
    private readonly jobId: string
  ) {
    this.list = h('ul', { class: 'jw-files-list' });
    this.where = h('code', {}, '/work');
    const refresh = h('button', { class: 'jp-Button jw-button jw-files-refresh', onclick: () => void this.load() }, 'Refresh');
    this.node = h('section', { class: 'jw-files', 'aria-label': 'Files in /work' },
      h('h3', {}, 'Files in ', this.where, ' ', refresh), this.list);  // prettier-ignore
  }

  async open(path: string): Promise<void> {
    this.path = path;
    await this.load();
  }

  async load(): Promise<void> {
    this.where.textContent = `/work/${this.path}`;
    try {
      const listing = await this.api.listFiles(this.jobId, this.path);
      const items = listing.entries.map(entry => this.item(entry.name, entry.type, entry.size));
      if (this.path) {
        const parent = this.path.split('/').slice(0, -1).join('/');
        items.unshift(h('li', {}, h('button', { class: 'jw-link', onclick: () => void this.open(parent) }, '..')));
      }
      if (listing.entries.length === 0) {
        items.push(h('li', { class: 'jw-empty' }, 'empty'));
      }
      if (listing.truncated) {
        items.push(h('li', { class: 'jw-empty' }, 'only the first 1000 entries are shown'));
      }
      this.list.replaceChildren(...items);
    } catch (error) {
      this.list.replaceChildren(h('li', { class: 'jw-empty' }, error instanceof WorkerError ? error.message : String(error)));
    }
  }

  private item(name: string, type: string, size: number | null): HTMLLIElement {
    const path = this.path ? `${this.path}/${name}` : name;
    if (type === 'directory') {
      return h('li', {}, h('button', { class: 'jw-link', onclick: () => void this.open(path) }, `${name}/`));
    }
    if (type === 'file') {
      return h('li', {}, h('a', { href: this.api.downloadUrl(this.jobId, path), download: name }, name), ` ${formatBytes(size)}`);
    }
    return h('li', { class: 'jw-special' }, `${name} (${type === 'symlink' ? 'a link: not followed' : 'not a regular file'})`);
  }
}
