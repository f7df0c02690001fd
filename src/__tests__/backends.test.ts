import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { JobForm, backendChoice, jobRequest, nodeWords, placeWords, queueWords } from '../model';
import { job } from './fixtures';

const form = (over: Partial<JobForm>): JobForm => ({ command: 'python3 train.py', name: '', network: '', limits: {}, folder: '', mounts: '', ...over });

const SLURM = { backends: ['local', 'slurm'], slurm: { partitions: ['debug', 'gpu'], default_partition: 'debug' } };

describe('the form offers Slurm only where the executor does', () => {
  it('hides the choice when capabilities name no backends (an executor before Slurm)', () => {
    assert.equal(backendChoice({ policy: {} }).offered, false);
    assert.equal(backendChoice(null).offered, false);
  });
  it('hides the choice when only the local sandbox is offered', () => {
    assert.deepEqual(backendChoice({ backends: ['local'], slurm: { partitions: ['debug'] } }), { offered: false, partitions: [], defaultPartition: '' });
  });
  it('offers Slurm with its partitions and default partition', () => {
    assert.deepEqual(backendChoice(SLURM), { offered: true, partitions: ['debug', 'gpu'], defaultPartition: 'debug' });
  });
  it('reads the offer from the executor policy as well as from the top level', () => {
    assert.deepEqual(backendChoice({ policy: { backends: ['local', 'slurm'], slurm: { partitions: ['batch'] } } }), { offered: true, partitions: ['batch'], defaultPartition: '' });
  });
  it('offers Slurm without partitions when the cluster lists none', () => {
    assert.deepEqual(backendChoice({ backends: ['local', 'slurm'] }), { offered: true, partitions: [], defaultPartition: '' });
  });
});

describe('the form becomes a REST body with backend and placement', () => {
  it('sends no backend for a local job', () => {
    const body = jobRequest(form({ backend: 'local', partition: 'debug' }), []);
    assert.equal('backend' in body, false);
    assert.equal('placement' in body, false);
  });
  it('sends backend slurm and the placement asked for', () => {
    const body = jobRequest(form({ backend: 'slurm', partition: 'gpu', account: 'lab', qos: 'high' }), []);
    assert.equal(body.backend, 'slurm');
    assert.deepEqual(body.placement, { partition: 'gpu', account: 'lab', qos: 'high' });
  });
  it('omits empty placement fields, and placement itself when all are empty', () => {
    assert.deepEqual(jobRequest(form({ backend: 'slurm', partition: '', account: ' lab ', qos: '' }), []).placement, { account: 'lab' });
    const bare = jobRequest(form({ backend: 'slurm', partition: '', account: '', qos: '' }), []);
    assert.equal(bare.backend, 'slurm');
    assert.equal('placement' in bare, false);
  });
  it('refuses a placement that is not a Slurm name', () => {
    assert.throws(() => jobRequest(form({ backend: 'slurm', account: 'lab; rm -rf' }), []), /account: 'lab; rm -rf' is not a Slurm name/);
    assert.throws(() => jobRequest(form({ backend: 'slurm', qos: 'q'.repeat(65) }), []), /qos: .* is not a Slurm name/);
  });
});

describe('a job placed on a node says where', () => {
  it('names the node in the list', () => {
    assert.equal(nodeWords(job({ node: 'n2' })), 'on n2');
    assert.equal(nodeWords(job({})), null);
  });
  it('says nothing extra for a local job', () => {
    assert.equal(placeWords(job({ backend: 'local' })), null);
    assert.equal(placeWords(job({})), null);
  });
  it('names the Slurm job, its node and what it asked for', () => {
    const running = job({ backend: 'slurm', node: 'n2', placement: { partition: 'debug', account: 'lab', slurm_job_id: '123' } });
    assert.equal(placeWords(running), 'Slurm job 123 on n2 (partition debug, account lab)');
    assert.equal(placeWords(job({ backend: 'slurm', status: 'QUEUED', placement: { slurm_job_id: '7' } })), 'Slurm job 7');
    assert.equal(placeWords(job({ backend: 'slurm', status: 'QUEUED', placement: { qos: 'high' } })), 'Slurm, not placed yet (qos high)');
  });
});

describe("a job waiting in Slurm's queue says why, with no place of ours", () => {
  it("shows the cluster's reason alone", () => {
    assert.equal(queueWords(job({ status: 'QUEUED', queue: { position: null, reason: 'waiting for resources on the cluster' } })), 'waiting for resources on the cluster');
  });
  it('still gives a local job its place', () => {
    assert.equal(queueWords(job({ status: 'QUEUED', queue: { position: 1, reason: '4 of 4 running slots in use' } })), 'next to start: 4 of 4 running slots in use');
  });
});
