/**
 * The server extension's REST routes and websockets under {base_url}api/worker/, with the
 * page's own Jupyter credentials (ServerConnection: token, XSRF cookie).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { Job, JobStatus, LimitRow, LogFrameReader, MetricHistory, Policy } from './model';

export class WorkerError extends Error {}

export interface Capabilities {
  executor: { available: boolean; problem: string | null; embedded: boolean };
  policy: Policy | null;
  default_network: string | null;
  /** Where jobs may run ('local', and 'slurm' when the executor has Slurm on). */
  backends?: string[] | null;
  /** Slurm's partitions this user may pick and the one a job gets without asking. */
  slurm?: { partitions?: string[] | null; default_partition?: string | null } | null;
}

export interface WorkEntry {
  name: string;
  type: 'directory' | 'file' | 'symlink' | 'other';
  size: number | null;
  mtime: number;
}

export interface WorkListing {
  path: string;
  entries: WorkEntry[];
  truncated: boolean;
}

export interface StreamHandlers {
  log(stream: string, text: string, nextOffset: number): void;
  job(job: Job): void;
  metrics(metrics: Job['metrics']): void;
  end(job: Job): void;
}

export class WorkerAPI {
  readonly settings = ServerConnection.makeSettings();
  private table: LimitRow[] | null = null;

  async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'api/worker', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new WorkerError(`the Jupyter server did not answer: ${error}`);
    }
    const text = await response.text();
    const body = text ? JSON.parse(text) : {};
    if (!response.ok) {
      throw new WorkerError(body.message || `${response.status} ${response.statusText}`);
    }
    return body as T;
  }

  listJobs(status: JobStatus | 'ALL', cursor: number | null, limit = 100): Promise<{ jobs: Job[]; cursor: number | null }> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (status !== 'ALL') {
      query.append('status', status);
    }
    if (cursor !== null) {
      query.append('cursor', String(cursor));
    }
    return this.request(`jobs?${query}`);
  }

  getJob(id: string): Promise<Job> {
    return this.request(`jobs/${id}`);
  }

  /** The job's metric history (one sample a second, downsampled for long runs), also once it ended. */
  metrics(id: string): Promise<MetricHistory> {
    return this.request(`jobs/${id}/metrics`);
  }

  submit(body: Record<string, unknown>): Promise<Job> {
    return this.request('jobs', { method: 'POST', body: JSON.stringify(body) });
  }

  stop(id: string): Promise<Job> {
    return this.request(`jobs/${id}/stop`, { method: 'POST', body: '{}' });
  }

  remove(id: string): Promise<void> {
    return this.request(`jobs/${id}`, { method: 'DELETE' });
  }

  listFiles(id: string, path: string): Promise<WorkListing> {
    return this.request(`jobs/${id}/files?${new URLSearchParams({ path })}`);
  }

  /** A link that downloads a file of the job's /work with the page's credentials. */
  downloadUrl(id: string, path: string): string {
    const query = new URLSearchParams({ path });
    if (this.settings.token) {
      query.append('token', this.settings.token);
    }
    return `${URLExt.join(this.settings.baseUrl, 'api/worker/jobs', id, 'files/download')}?${query}`;
  }

  async capabilities(): Promise<Capabilities> {
    const answer = await this.request<Capabilities>('capabilities');
    this.table = answer.policy?.limits ?? this.table;
    return answer;
  }

  /** The executor's table of limits from the last capabilities answer (asked now if none came
   * yet); empty while no executor answers. */
  async limitTable(): Promise<LimitRow[]> {
    if (this.table === null) {
      await this.capabilities().catch(() => undefined);
    }
    return this.table ?? [];
  }

  socket(path: string, params: Record<string, string> = {}): WebSocket {
    const query = new URLSearchParams(params);
    if (this.settings.token) {
      query.append('token', this.settings.token);
    }
    const url = URLExt.join(this.settings.wsUrl, 'api/worker', path);
    return new this.settings.WebSocket(query.toString() ? `${url}?${query}` : url);
  }

  /** Every change to the user's jobs; reconnects (with growing pauses) until disposed. */
  watchJobs(onJob: (job: Job) => void, onState: (connected: boolean) => void): { dispose(): void } {
    let socket: WebSocket | null = null;
    let disposed = false;
    let pause = 500;
    const connect = () => {
      socket = this.socket('events');
      socket.onopen = () => {
        pause = 500;
        onState(true);
      };
      socket.onmessage = message => {
        const event = JSON.parse(message.data);
        if (event.type === 'job') {
          onJob(event.job as Job);
        }
      };
      socket.onclose = () => {
        onState(false);
        if (!disposed) {
          setTimeout(connect, pause);
          pause = Math.min(pause * 2, 10_000);
        }
      };
    };
    connect();
    return {
      dispose: () => {
        disposed = true;
        socket?.close();
      }
    };
  }

  /** One job's log from offset on, its status and metrics, until it ends; resumes where it broke off. */
  followJob(id: string, handlers: StreamHandlers): { dispose(): void } {
    let offset = 0;
    let ended = false;
    let disposed = false;
    let socket: WebSocket | null = null;
    const frames = new LogFrameReader();
    const connect = () => {
      // log chunks come as binary frames of raw bytes, everything else as JSON text
      socket = this.socket(`jobs/${id}/stream`, { offset: String(offset), frames: 'binary' });
      socket.binaryType = 'arraybuffer';
      socket.onmessage = message => {
        if (typeof message.data !== 'string') {
          const chunk = frames.read(message.data as ArrayBuffer);
          if (chunk !== null) {
            offset = chunk.nextOffset;
            handlers.log(chunk.stream, chunk.text, offset);
          }
          return;
        }
        const event = JSON.parse(message.data);
        if (event.type === 'status') {
          handlers.job(event.job);
        } else if (event.type === 'metrics') {
          handlers.metrics(event.metrics);
        } else if (event.type === 'end') {
          ended = true;
          handlers.end(event.job);
        }
      };
      socket.onclose = () => {
        if (!ended && !disposed) {
          setTimeout(connect, 1000);
        }
      };
    };
    connect();
    return {
      dispose: () => {
        disposed = true;
        socket?.close();
      }
    };
  }
}
