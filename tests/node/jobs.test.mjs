// End-to-end test of the job API (CreateMediaJobs, DescribeMediaJob, DescribeMediaJobs, CancelMediaJob)
// through Tencent's official Node SDK (cos-nodejs-sdk-v5) against a running `mediajobs serve --test-controls`.
//
// The SDK has no dedicated job functions: Tencent's own demo (demo/demo.js: CreateMediaJobs,
// DescribeMediaJob, DescribeMediaJobs, CancelMediaJob) calls the generic `cos.request` with the bucket's
// `.ci.` URL, and that is what this test does. With the `Ip` option the SDK sends the request to
// 127.0.0.1:<port> and moves `<bucket>.ci.<region>.myqcloud.com` into the Host header (and signs that host).
//
// Run by tests/e2e/test_node_jobs.py, which starts the server with --test-controls, uploads a small mp4
// and sets:
//   MEDIAJOBS_TEST_PORT, MEDIAJOBS_TEST_SECRET_ID, MEDIAJOBS_TEST_SECRET_KEY,
//   MEDIAJOBS_TEST_BUCKET, MEDIAJOBS_TEST_REGION,
//   MEDIAJOBS_TEST_VIDEO_KEY (an H.264 mp4 in the bucket), MEDIAJOBS_TEST_VIDEO_WIDTH, MEDIAJOBS_TEST_VIDEO_HEIGHT
// By hand: npm ci --prefix tests/node && <set those vars> node --test tests/node/jobs.test.mjs

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, describe, test } from 'node:test';

// The SDK's HTTP library honours HTTP(S)_PROXY; every request of this test must go straight to 127.0.0.1.
for (const name of ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy']) {
  delete process.env[name];
}

const require = createRequire(import.meta.url);
const COS = require('cos-nodejs-sdk-v5');

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set (see tests/e2e/test_node_jobs.py)`);
  return value;
}

const PORT = Number.parseInt(env('MEDIAJOBS_TEST_PORT'), 10);
const SECRET_ID = env('MEDIAJOBS_TEST_SECRET_ID');
const SECRET_KEY = env('MEDIAJOBS_TEST_SECRET_KEY');
const Bucket = env('MEDIAJOBS_TEST_BUCKET');
const Region = env('MEDIAJOBS_TEST_REGION');
const VIDEO_KEY = env('MEDIAJOBS_TEST_VIDEO_KEY');
const VIDEO_WIDTH = env('MEDIAJOBS_TEST_VIDEO_WIDTH');
const VIDEO_HEIGHT = env('MEDIAJOBS_TEST_VIDEO_HEIGHT');

// The demo writes 'https://' + host; the server under test speaks plain HTTP, and with `Ip` the SDK keeps the
// URL's scheme, so the scheme here is http. Everything else is the demo's call shape.
const CI_HOST = `${Bucket}.ci.${Region}.myqcloud.com`;
const CI_BASE = `http://${CI_HOST}`;

const JOB_ID = /^j[0-9a-f]{32}$/;
const POLL_TIMEOUT_MS = 30_000;

// Node's XML parser gives a single element as an object, repeated ones as an array, and none as undefined.
const asList = (v) => (v === undefined || v === '' ? [] : Array.isArray(v) ? v : [v]);

describe('cos-nodejs-sdk-v5 cos.request against the mediajobs job API', () => {
  /** @type {InstanceType<typeof COS>} */
  let cos;
  const sent = []; // every request the SDK put on the wire: {method, url, qs, host, retry}
  const answered = []; // every answer the SDK handed back: {call, statusCode, requestId, ciRequestId}
  let calls = 0; // how many cos.request calls this test made

  /** cos.request as a promise; records the answer (success or error) for the final checks. */
  const ci = (params) =>
    new Promise((resolve, reject) => {
      calls += 1;
      const call = `${params.Method} ${params.Url}${params.Action ? `?${params.Action}` : ''}`;
      cos.request({ Bucket, Region, ...params }, (err, data) => {
        const res = err || data;
        answered.push({
          call,
          statusCode: res?.statusCode,
          requestId: res?.RequestId,
          ciRequestId: res?.headers?.['x-ci-request-id'],
          cosRequestId: res?.headers?.['x-cos-request-id'],
        });
        if (err) reject(err);
        else resolve(data);
      });
    });

  // The demo's CreateMediaJobs: POST /jobs with the XML body built by COS.util.json2xml.
  const createJobs = (request, headers = {}) =>
    ci({
      Method: 'POST',
      Key: 'jobs',
      Url: `${CI_BASE}/jobs`,
      Headers: { 'content-type': 'application/xml', ...headers },
      Body: COS.util.json2xml({ Request: request }),
    });

  const createMediaInfo = async (headers = {}) => {
    const data = await createJobs({ Tag: 'MediaInfo', Input: { Object: VIDEO_KEY } }, headers);
    assert.equal(data.statusCode, 200);
    const details = asList(data.Response?.JobsDetail);
    assert.equal(details.length, 1, `expected one JobsDetail: ${JSON.stringify(data.Response)}`);
    return details[0];
  };

  // The demo's DescribeMediaJob: GET /jobs/<id>.
  const describeJob = async (jobId) => {
    const data = await ci({ Method: 'GET', Key: `jobs/${jobId}`, Url: `${CI_BASE}/jobs/${jobId}` });
    assert.equal(data.statusCode, 200);
    const details = asList(data.Response?.JobsDetail);
    assert.equal(details.length, 1, `expected one JobsDetail for ${jobId}: ${JSON.stringify(data.Response)}`);
    assert.equal(data.Response.NonExistJobIds, undefined, 'NonExistJobIds must be absent when the job exists');
    return details[0];
  };

  const waitForState = async (jobId, states, timeoutMs = POLL_TIMEOUT_MS) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const detail = await describeJob(jobId);
      if (states.includes(detail.State)) return detail;
      assert.ok(
        !['Success', 'Failed', 'Cancel'].includes(detail.State),
        `job ${jobId} ended ${detail.State} while waiting for ${states}: ${JSON.stringify(detail)}`,
      );
      if (Date.now() > deadline) {
        assert.fail(`job ${jobId} still ${detail.State} after ${timeoutMs} ms, waiting for ${states}`);
      }
      await sleep(200);
    }
  };

  const created = []; // job ids this run created, in creation order

  before(() => {
    cos = new COS({
      SecretId: SECRET_ID,
      SecretKey: SECRET_KEY,
      Ip: `127.0.0.1:${PORT}`,
      Protocol: 'http:',
      Timeout: 60_000,
    });
    cos.on('before-send', (opt) => {
      const headers = opt.headers || {};
      sent.push({
        method: opt.method,
        url: opt.url,
        qs: opt.qs || {},
        host: headers.Host,
        retry: Boolean(headers['x-cos-sdk-retry']),
      });
    });
  });

  test('CreateMediaJobs (MediaInfo), then DescribeMediaJob until Success with the MediaInfo result', async () => {
    const job = await createMediaInfo();
    assert.match(job.JobId ?? '', JOB_ID);
    created.push(job.JobId);
    assert.ok(['Submitted', 'Running', 'Success'].includes(job.State), `unexpected initial State ${job.State}`);
    assert.equal(job.Tag, 'MediaInfo');
    assert.equal(job.Code, 'Success');
    assert.equal(job.Input?.Object, VIDEO_KEY);
    assert.equal(job.Input?.BucketId, Bucket);
    assert.equal(job.Input?.Region, Region);
    assert.match(job.CreationTime ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$/);

    const done = await waitForState(job.JobId, ['Success']);
    assert.equal(done.JobId, job.JobId);
    assert.equal(done.Code, 'Success');
    assert.equal(done.Tag, 'MediaInfo');
    assert.equal(done.Progress, '100');
    assert.notEqual(done.EndTime, '-');
    assert.equal(done.Input?.Object, VIDEO_KEY);
    const info = done.Operation?.MediaInfo;
    assert.ok(info, `a finished MediaInfo job must carry Operation.MediaInfo: ${JSON.stringify(done)}`);
    assert.match(info.Format?.FormatName ?? '', /mp4/);
    assert.match(info.Format?.Duration ?? '', /^\d+\.\d{6}$/);
    const videos = asList(info.Stream?.Video);
    assert.equal(videos.length, 1, `one video stream expected: ${JSON.stringify(info.Stream)}`);
    assert.equal(videos[0].Width, VIDEO_WIDTH);
    assert.equal(videos[0].Height, VIDEO_HEIGHT);
    assert.equal(videos[0].CodecName, 'h264');
    const audios = asList(info.Stream?.Audio);
    assert.equal(audios.length, 1, `one audio stream expected: ${JSON.stringify(info.Stream)}`);
    assert.equal(audios[0].CodecName, 'aac');
  });

  test('a held job is Running until CancelMediaJob (Action cancel) ends it as Cancel', async () => {
    const job = await createMediaInfo({ 'x-mediajobs-hold': '30' });
    assert.match(job.JobId ?? '', JOB_ID);
    created.push(job.JobId);
    const running = await waitForState(job.JobId, ['Running']);
    assert.equal(running.EndTime, '-');

    // Like the demo's CancelMediaJob, plus Action: 'cancel' (on the wire `?cancel`, signed as `cancel=`).
    const t0 = Date.now();
    const res = await ci({
      Method: 'PUT',
      Key: `jobs/${job.JobId}`,
      Url: `${CI_BASE}/jobs/${job.JobId}`,
      Action: 'cancel',
    });
    assert.equal(res.statusCode, 200);
    const cancelled = await waitForState(job.JobId, ['Cancel'], 5_000);
    assert.ok(Date.now() - t0 < 5_000, 'the cancel took more than 5 s');
    assert.notEqual(cancelled.EndTime, '-');
    assert.equal(cancelled.Operation?.MediaInfo, undefined, 'a cancelled job has no result');
    const wire = sent.filter((r) => r.method === 'PUT');
    assert.equal(wire.length, 1);
    assert.match(wire[0].url, new RegExp(`/jobs/${job.JobId}\\?cancel$`));
  });

  test('DescribeMediaJobs (tag MediaInfo, size 2) pages with nextToken and lists each job once', async () => {
    // Two more finished jobs, so this run's jobs alone need at least two pages.
    for (let i = 0; i < 2; i += 1) {
      const job = await createMediaInfo();
      created.push(job.JobId);
      await waitForState(job.JobId, ['Success']);
    }
    assert.equal(created.length, 4);

    const seen = [];
    let nextToken = '';
    let pages = 0;
    for (;;) {
      const Query = { tag: 'MediaInfo', size: 2 };
      if (nextToken) Query.nextToken = nextToken;
      const data = await ci({ Method: 'GET', Key: 'jobs', Url: `${CI_BASE}/jobs`, Query });
      assert.equal(data.statusCode, 200);
      pages += 1;
      const details = asList(data.Response?.JobsDetail);
      assert.ok(details.length <= 2, `page ${pages} has ${details.length} jobs with size=2`);
      for (const d of details) {
        assert.match(d.JobId ?? '', JOB_ID);
        assert.equal(d.Tag, 'MediaInfo');
        seen.push(d);
      }
      assert.ok('NextToken' in data.Response, `every list page carries NextToken: ${JSON.stringify(data)}`);
      nextToken = data.Response.NextToken;
      if (!nextToken) break;
      assert.equal(details.length, 2, 'a page before the last must be full');
      assert.ok(pages < 100, 'paging does not end');
    }
    assert.ok(pages >= 2, `expected at least two pages, got ${pages}`);

    const ids = seen.map((d) => d.JobId);
    assert.equal(new Set(ids).size, ids.length, `a job was listed twice: ${ids}`);
    for (const id of created) {
      assert.equal(ids.filter((x) => x === id).length, 1, `job ${id} should be listed exactly once`);
    }
    // Default order is CreationTime descending: this run's jobs appear newest first.
    const mine = ids.filter((id) => created.includes(id));
    assert.deepEqual(mine, [...created].reverse());
    const byId = new Map(seen.map((d) => [d.JobId, d]));
    assert.equal(byId.get(created[1]).State, 'Cancel');
    assert.equal(byId.get(created[0]).State, 'Success');
    assert.ok(byId.get(created[0]).Operation?.MediaInfo, 'listed finished jobs carry their results');
  });

  test('CreateMediaJobs with an unknown Tag fails with 400 InvalidArgument', async () => {
    const before = calls;
    await assert.rejects(createJobs({ Tag: 'NoSuchTag', Input: { Object: VIDEO_KEY } }), (err) => {
      assert.equal(err.statusCode, 400);
      assert.equal(err.code, 'InvalidArgument');
      assert.ok(err.error?.Message, `the error body needs a Message: ${JSON.stringify(err.error)}`);
      assert.ok(err.error?.RequestId, 'the error body needs a RequestId');
      assert.equal(err.error.RequestId, err.headers?.['x-ci-request-id']);
      return true;
    });
    assert.equal(calls, before + 1);
  });

  test('every request went to 127.0.0.1 with the .ci. Host header, got a request id and none was retried', () => {
    assert.ok(sent.length > 0);
    for (const r of sent) {
      assert.ok(r.url.startsWith(`http://127.0.0.1:${PORT}/jobs`), `request left 127.0.0.1: ${r.method} ${r.url}`);
      assert.equal(r.host, CI_HOST, `${r.method} ${r.url}`);
    }
    const retried = sent.filter((r) => r.retry);
    assert.deepEqual(retried, [], 'the SDK retried requests (it does that after 5xx or network errors)');
    assert.equal(sent.length, calls, 'the SDK sent more requests than the test made: it retried');
    assert.equal(answered.length, calls);
    for (const a of answered) {
      assert.ok(a.statusCode, `no HTTP answer for ${a.call}`);
      assert.ok(a.ciRequestId, `${a.call} (${a.statusCode}): no x-ci-request-id`);
      assert.ok(a.cosRequestId, `${a.call} (${a.statusCode}): no x-cos-request-id`);
      assert.equal(a.ciRequestId, a.cosRequestId, `${a.call}: x-ci-request-id and x-cos-request-id differ`);
      assert.equal(a.requestId, a.cosRequestId, `${a.call}: the SDK's RequestId`);
    }
  });
});
