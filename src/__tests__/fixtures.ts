import { Job } from '../model';

/** A running job as the executor sends it, with the fields a test changes. */
export function job(over: Partial<Job>): Job {
  return {
    id: 'a0000000-0000-0000-0000-000000000000',
    name: '',
    owner: 'alice',
    command: ['sleep', '1'],
    status: 'RUNNING',
    limits: {},
    network: 'none',
    created_at: 100,
    started_at: 100,
    metrics: {},
    ...over
  };
}
