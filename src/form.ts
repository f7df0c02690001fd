/**
 * "New job": a command, the folder it runs in (the file browser's current folder until the user
 * types another: read-only at its own path in the job and its working directory, so
 * `python3 train.py` runs the user's script), mounts, a name, a field per limit of the executor's table (from `capabilities`:
 * label, unit, this user's default as placeholder, maximum as hint; values take units as on the
 * command line) and the network mode. Where the executor offers Slurm (`capabilities.backends`),
 * a "Where" choice (this host or the cluster) and, for the cluster, Slurm's partition (among
 * those `capabilities` lists; typed where it lists none), account and QoS. A refusal (here or by the server) is shown in the form.
 */
import { Widget } from '@lumino/widgets';

import { Capabilities, WorkerAPI, WorkerError } from './api';
import { h } from './dom';
import { Backends, FollowedFolder, Job, LimitField, PLACEMENT_LABELS, backendChoice, inert, jobRequest, limitFields } from './model';

export class NewJobForm extends Widget {
  private fields: LimitField[] = [];
  private readonly command: HTMLInputElement;
  private readonly name: HTMLInputElement;
  private readonly folder: HTMLInputElement;
  private readonly mounts: HTMLTextAreaElement;
  private readonly followed = new FollowedFolder();
  private browsedPath = '';
  private readonly network: HTMLSelectElement;
  private readonly where: HTMLDivElement;
  private readonly backend: HTMLSelectElement;
  private readonly placementBox: HTMLDivElement;
  private readonly partition: HTMLSelectElement;
  /** The partition typed, where capabilities list none to choose from. */
  private readonly partitionTyped: HTMLInputElement;
  private readonly partitionField: HTMLLabelElement;
  private readonly partitionTypedField: HTMLLabelElement;
  private readonly account: HTMLInputElement;
  private readonly qos: HTMLInputElement;
  private backends: Backends = { offered: false, partitions: [], defaultPartition: '' };
  private readonly limits: HTMLDivElement;
  private readonly error: HTMLDivElement;
  private readonly inputs = new Map<string, HTMLInputElement>();

  constructor(
    private readonly api: WorkerAPI,
    private readonly started: (job: Job) => void
  ) {
    super({ node: h('form', { class: 'jw-form', 'aria-label': 'New job', novalidate: true }) });
    this.command = h('input', { class: 'jw-command', name: 'command', placeholder: "python3 train.py --epochs 3", required: true });
    this.name = h('input', { class: 'jw-job-name', name: 'name', placeholder: 'optional' });
    this.folder = h('input', {
      class: 'jw-folder',
      name: 'folder',
      placeholder: "the server's root folder",
      title: "Where the job runs, relative to the server's root folder (read-only in the job). Follows the file browser until you type here.",
      autocomplete: 'off'
    });
    this.folder.addEventListener('input', () => this.followed.typedIn(this.folder.value));
    this.mounts = h('textarea', {
      class: 'jw-mounts',
      name: 'mounts',
      rows: 2,
      placeholder: 'data:/data\nresults:results:rw',
      title: 'SRC:DST, read-only, or SRC:DST:rw; one a line or comma-separated. A relative path is taken from the folder.'
    });
    this.network = h('select', { name: 'network' });
    this.drawNetworks(['none', 'host']);
    this.backend = h('select', { class: 'jw-backend', name: 'backend', title: 'This host runs the job in its sandbox; the cluster runs it in the same sandbox on a Slurm node' },
      h('option', { value: 'local' }, 'Local: this host'),
      h('option', { value: 'slurm' }, 'Slurm: the cluster'));
    this.backend.addEventListener('change', () => this.drawPlacement());
    this.partition = h('select', { class: 'jw-partition', name: 'partition' });
    this.partitionTyped = h('input', { class: 'jw-partition-typed', name: 'partition-typed', placeholder: "the cluster's default", autocomplete: 'off', title: "Slurm's --partition (empty: the default)" });
    this.partitionField = labelled(PLACEMENT_LABELS.partition, this.partition);
    this.partitionTypedField = labelled(PLACEMENT_LABELS.partition, this.partitionTyped);
    this.account = h('input', { class: 'jw-account', name: 'account', placeholder: 'your default', autocomplete: 'off', title: "Slurm's --account (empty: your default)" });
    this.qos = h('input', { class: 'jw-qos', name: 'qos', placeholder: 'the default', autocomplete: 'off', title: "Slurm's --qos (empty: the default)" });
    // Wrappers carry `hidden`: the fields' own display style would show them regardless.
    this.placementBox = h('div', { class: 'jw-placement', hidden: true },
      h('div', { class: 'jw-fields' },
        this.partitionField,
        this.partitionTypedField,
        labelled(PLACEMENT_LABELS.account, this.account),
        labelled(PLACEMENT_LABELS.qos, this.qos)));
    this.where = h('div', { class: 'jw-where', hidden: true }, labelled('Where', this.backend, 'the cluster: the same sandbox on a node'), this.placementBox);
    this.limits = h('div', { class: 'jw-fields jw-limits' });
    this.error = h('div', { class: 'jw-form-error', role: 'alert' });
    this.node.append(
      labelled('Command', this.command),
      labelled('Folder', this.folder, 'runs here; read-only in the job'),
      labelled('Mounts', this.mounts, 'SRC:DST[:rw], relative to the folder'),
      labelled('Name', this.name),
      this.where,
      this.limits,
      labelled('Network', this.network),
      this.error,
      h('div', { class: 'jw-form-buttons' },
        h('button', { type: 'submit', class: 'jp-Button jw-button jw-primary jw-start' }, 'Start'),
        h('button', { type: 'button', class: 'jp-Button jw-button jw-cancel', onclick: () => this.hide() }, 'Cancel'))
    );
    this.node.addEventListener('submit', event => {
      event.preventDefault();
      void this.submit();
    });
    this.drawLimits();
    this.hide();
  }

  configure(capabilities: Capabilities): void {
    const policy = capabilities.policy ?? {};
    this.fields = limitFields(policy);
    this.drawLimits();
    this.drawNetworks(policy.network_modes ?? ['none', 'host']);
    const preferred = capabilities.default_network || policy.default_network;
    this.network.value = preferred && preferred !== 'auto' ? preferred : '';
    this.configureBackends(backendChoice(capabilities));
  }

  /** The "Where" choice, shown only when the executor offers Slurm. */
  private configureBackends(backends: Backends): void {
    this.backends = backends;
    this.where.hidden = !backends.offered;
    if (!backends.offered) {
      this.backend.value = 'local';
    }
    const chosen = this.partition.value;
    this.partition.replaceChildren(
      h('option', { value: '' }, backends.defaultPartition ? `the default (${backends.defaultPartition})` : "the cluster's default"),
      ...backends.partitions.map(name => h('option', { value: name }, name))
    );
    this.partition.value = backends.partitions.includes(chosen) ? chosen : '';
    // A list to choose from where capabilities give one, else a field to type the name in.
    const listed = backends.partitions.length > 0;
    this.partitionField.style.display = listed ? '' : 'none';
    this.partitionTypedField.style.display = listed ? 'none' : '';
    this.partitionTyped.placeholder = backends.defaultPartition ? `the default (${backends.defaultPartition})` : "the cluster's default";
    this.drawPlacement();
  }

  /** Partition, account and QoS: only for a job sent to the cluster. */
  private drawPlacement(): void {
    this.placementBox.hidden = !(this.backends.offered && this.backend.value === 'slurm');
  }

  /** The modes the executor offers; '' leaves the choice to its default. */
  private drawNetworks(modes: string[]): void {
    const words: Record<string, string> = {
      none: 'none: no network',
      host: "host: the host's network",
      isolated: 'isolated: internet through NAT, not the host or private ranges'
    };
    this.network.replaceChildren(
      h('option', { value: '' }, "the executor's default"),
      ...modes.map(mode => h('option', { value: mode }, words[mode] ?? mode))
    );
  }

  /** The file browser is now at path (a contents path): the folder field follows it unless the
   * user typed their own. */
  browsed(path: string): void {
    this.browsedPath = path;
    this.followed.browsed(path);
    this.folder.value = this.followed.value;
  }

  toggle(): void {
    this.isHidden ? this.show() : this.hide();
  }

  show(): void {
    super.show();
    this.focusCommand();
    if (this.fields.length === 0) {
      // No executor answered when the panel started: ask again for its limits.
      this.api.capabilities().then(
        capabilities => this.configure(capabilities),
        () => undefined
      );
    }
  }

  focusCommand(): void {
    this.command.focus();
  }

  private drawLimits(): void {
    this.inputs.clear();
    this.limits.replaceChildren(
      ...this.fields.map(field => {
        const input = h('input', { type: 'text', name: field.key, placeholder: field.placeholder, title: field.help, autocomplete: 'off' });
        this.inputs.set(field.key, input);
        return labelled(field.label, input, field.hint);
      })
    );
  }

  private async submit(): Promise<void> {
    this.error.textContent = '';
    let body: Record<string, unknown>;
    try {
      const limits: Record<string, string> = {};
      this.inputs.forEach((input, key) => (limits[key] = input.value));
      body = jobRequest(
        {
          command: this.command.value,
          name: this.name.value,
          network: this.network.value,
          limits,
          folder: this.folder.value,
          mounts: this.mounts.value,
          ...(this.backends.offered && this.backend.value === 'slurm'
            ? { backend: 'slurm', partition: this.backends.partitions.length > 0 ? this.partition.value : this.partitionTyped.value, account: this.account.value, qos: this.qos.value }
            : {})
        },
        this.fields
      );
    } catch (error) {
      this.error.textContent = inert((error as Error).message);
      return;
    }
    try {
      const job = await this.api.submit(body);
      this.started(job);
      this.command.value = '';
      this.name.value = '';
      this.mounts.value = '';
      this.followed.follow(this.browsedPath);
      this.folder.value = this.followed.value;
      this.hide();
    } catch (error) {
      this.error.textContent = inert(`The server refused the job: ${error instanceof WorkerError ? error.message : error}`);
    }
  }
}

function labelled(text: string, control: HTMLElement, hint = ''): HTMLLabelElement {
  return h('label', { class: 'jw-field' }, h('span', {}, text), control, hint ? h('small', { class: 'jw-hint' }, hint) : null);
}
