/**
 * jupyter-worker in JupyterLab: the "Worker jobs" side panel, a main-area view per job,
 * palette commands, a status bar count of running jobs, and a notification when a job ends
 * (Settings: all, failures only (the default) or none; never for a job the user is watching).
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { WorkerAPI } from './api';
import { JobView } from './jobView';
import { Job, inert, jobTitle, shouldNotify } from './model';
import { JobsPanel } from './panel';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M4 4h16v4H4zm0 6h16v4H4zm0 6h10v4H4zm12 0h4v4h-4z"/></svg>';

export const workerIcon = new LabIcon({ name: 'jupyter-worker:jobs', svgstr: ICON_SVG });

const COMMANDS = {
  open: 'jupyter-worker:open-panel',
  create: 'jupyter-worker:new-job',
  refresh: 'jupyter-worker:refresh',
  job: 'jupyter-worker:open-job'
};

function runningCount(panel: JobsPanel): Widget {
  const item = new Widget();
  item.addClass('jw-status-item');
  item.node.title = 'Worker jobs running: click to show them';
  item.node.setAttribute('role', 'button');
  item.node.tabIndex = 0;
  const draw = () => {
    const running = panel.jobs.count('RUNNING');
    const queued = panel.jobs.count('QUEUED');
    item.node.textContent = `Jobs: ${running} running${queued ? `, ${queued} queued` : ''}`;
  };
  panel.changed.connect(draw);
  draw();
  return item;
}

/**
 * Whether the user is watching the job now: its %%worker widget or the widget's HTML form in a
 * cell's output (an element with the class jw-job-<id>, or the header's "<b>name</b>
 * <code>1a2b3c4d</code>": the id's first 8 characters), or its view in the main area, is drawn
 * and at least partly inside the window. A hidden tab, a collapsed or
 * scrolled-away output does not count: then the notification is how the user learns the end.
 */
export function isWatched(id: string): boolean {
  const candidates: Element[] = [
    ...Array.from(document.querySelectorAll(`.jw-job-${CSS.escape(id)}`)),
    // The widget's (and its saved HTML form's) header: <b>name</b> <code>first 8 of the id</code>.
    ...Array.from(document.querySelectorAll('.jp-OutputArea-output code')).filter(code => code.textContent === id.slice(0, 8) && code.previousElementSibling?.tagName === 'B'),
    ...[document.getElementById(`jupyter-worker-job-${id}`)].filter((node): node is HTMLElement => node !== null)
  ];
  return candidates.some(onScreen);
}

function onScreen(node: Element): boolean {
  if (document.visibilityState === 'hidden') {
    return false;
  }
  const box = node.getBoundingClientRect();
  if (box.width === 0 || box.height === 0 || (node as HTMLElement).closest('.lm-mod-hidden, [hidden]')) {
    return false;
  }
  return box.bottom > 0 && box.right > 0 && box.top < window.innerHeight && box.left < window.innerWidth;
}

function notifyEnding(job: Job): void {
  const label = jobTitle(job);
  const words = inert(`${label}: ${job.status_text ?? job.status.toLowerCase()}`);
  if (job.status === 'COMPLETED') {
    Notification.success(`Job finished. ${words}`, { autoClose: 5000 });
  } else if (job.status === 'FAILED') {
    Notification.error(`Job failed. ${words}`, { autoClose: 10000 });
  } else {
    Notification.info(`Job stopped. ${words}`, { autoClose: 5000 });
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-worker:panel',
  description: 'Sandboxed background jobs: list, logs, metrics, stop and new jobs',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, IStatusBar, IDefaultFileBrowser, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    fileBrowser: IDefaultFileBrowser | null,
    registry: ISettingRegistry | null
  ) => {
    const api = new WorkerAPI();
    const panel = new JobsPanel(api);
    panel.title.icon = workerIcon;
    const views = new Map<string, JobView>();

    const openJob = async (id: string) => {
      let view = views.get(id);
      if (!view || view.isDisposed) {
        const job = panel.jobs.get(id) ?? (await api.getJob(id));
        view = new JobView(api, job, gone => panel.forget(gone));
        views.set(id, view);
        view.disposed.connect(() => views.delete(id));
        app.shell.add(view, 'main');
      }
      app.shell.activateById(view.id);
    };
    panel.opened.connect((_, id) => void openJob(id));
    // Settings > Worker jobs > notifications; read again whenever the user changes it.
    let notifications = 'failures';
    if (registry) {
      void registry
        .load(plugin.id)
        .then(settings => {
          const read = () => {
            notifications = String(settings.get('notifications').composite ?? 'failures');
          };
          read();
          settings.changed.connect(read);
        })
        .catch(reason => console.warn('jupyter-worker: settings not loaded, notifications for failures only', reason));
    }
    panel.finished.connect((_, job) => {
      if (shouldNotify(job, notifications, isWatched(job.id))) {
        notifyEnding(job);
      }
    });

    app.commands.addCommand(COMMANDS.open, {
      label: 'Show Worker Jobs',
      caption: 'Open the panel of sandboxed background jobs',
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(COMMANDS.create, {
      label: 'New Worker Job…',
      caption: 'Start a command as a sandboxed background job',
      execute: () => {
        panel.showForm();
        app.shell.activateById(panel.id);
      }
    });
    app.commands.addCommand(COMMANDS.refresh, {
      label: 'Reload Worker Jobs',
      execute: () => panel.reload()
    });
    app.commands.addCommand(COMMANDS.job, {
      label: 'Open Worker Job',
      execute: args => openJob(String(args.id))
    });
    for (const command of [COMMANDS.open, COMMANDS.create, COMMANDS.refresh]) {
      palette?.addItem({ command, category: 'Worker' });
    }

    if (fileBrowser) {
      // The form's folder is where the user is browsing; a folder on another drive ('Drive:dir',
      // not a folder of the server's disk) is not followed.
      const contents = app.serviceManager.contents;
      const follow = () => {
        const path = fileBrowser.model.path;
        if (contents.driveName(path) === '') {
          panel.browsed(contents.localPath(path));
        }
      };
      fileBrowser.model.pathChanged.connect(follow);
      follow();
    }

    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'jupyter-worker-panel');

    if (statusBar) {
      const item = runningCount(panel);
      item.node.addEventListener('click', () => app.shell.activateById(panel.id));
      statusBar.registerStatusItem('jupyter-worker:running', { item, align: 'left', rank: 50 });
    }
  }
};

export default plugin;
