/**
 * Small DOM helpers shared by the panel, the job view and the form. Every text and attribute that
 * `h` puts in the page is a text node or an attribute value (never markup) and goes through
 * model.inert, so a job's command, name or error can neither add elements nor forge text.
 */
import { Job, STATUS_COLOURS, inert, queueWords, shortStatus, statusText } from './model';

type Attributes = Record<string, string | number | boolean | ((event: Event) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: (Node | string | null)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === 'function') {
      node.addEventListener(name.replace(/^on/, ''), value);
    } else if (typeof value === 'boolean') {
      if (value) {
        node.setAttribute(name, '');
      }
    } else {
      node.setAttribute(name, inert(String(value)));
    }
  }
  for (const child of children) {
    if (child !== null) {
      node.append(typeof child === 'string' ? inert(child) : child);
    }
  }
  return node;
}

/** The status badge, coloured as in the %%worker widget: in the list one short word ('done',
 * 'failed'), the full words ('exit code 0', 'killed: out of memory (limit 64 MiB)') in its
 * tooltip; in the job's view the full words. */
export function badge(job: Job, words: 'short' | 'full' = 'short'): HTMLSpanElement {
  const full = [statusText(job), queueWords(job)].filter(Boolean).join(', ');
  const node = h('span', { class: 'jw-badge', 'data-status': job.status, title: full }, words === 'short' ? shortStatus(job) : statusText(job));
  node.style.background = STATUS_COLOURS[job.status];
  return node;
}

/** Many changes, one redraw: draw runs at most once per animation frame. */
export function frameThrottled(draw: () => void): () => void {
  let pending = false;
  return () => {
    if (pending) {
      return;
    }
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  };
}
