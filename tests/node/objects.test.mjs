// End-to-end test: Tencent's official Node SDK (cos-nodejs-sdk-v5) against a running `mediajobs serve`.
//
// Run by tests/e2e/test_node_sdk.py, which starts the server and sets:
//   MEDIAJOBS_TEST_PORT, MEDIAJOBS_TEST_SECRET_ID, MEDIAJOBS_TEST_SECRET_KEY,
//   MEDIAJOBS_TEST_BUCKET, MEDIAJOBS_TEST_REGION
// By hand: npm ci --prefix tests/node && <set those vars> node --test tests/node/objects.test.mjs

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

// The SDK's HTTP library honours HTTP(S)_PROXY; every request of this test must go straight to 127.0.0.1.
for (const name of ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy']) {
  delete process.env[name];
}

const require = createRequire(import.meta.url);
const COS = require('cos-nodejs-sdk-v5');

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set (see tests/e2e/test_node_sdk.py)`);
  return value;
}

const PORT = Number.parseInt(env('MEDIAJOBS_TEST_PORT'), 10);
const SECRET_ID = env('MEDIAJOBS_TEST_SECRET_ID');
const SECRET_KEY = env('MEDIAJOBS_TEST_SECRET_KEY');
const Bucket = env('MEDIAJOBS_TEST_BUCKET');
const Region = env('MEDIAJOBS_TEST_REGION');

const md5hex = (buf) => createHash('md5').update(buf).digest('hex');
const md5File = (file) =>
  new Promise((resolve, reject) => {
    const hash = createHash('md5');
    createReadStream(file)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')));
  });

// Unique per run, so the test can share the server with other tests and with earlier runs.
const PREFIX = `node-sdk-e2e/${Date.now().toString(36)}-${randomBytes(4).toString('hex')}/`;

describe('cos-nodejs-sdk-v5 against mediajobs', () => {
  /** @type {InstanceType<typeof COS>} */
  let cos;
  let workDir;
  const sent = []; // every request the SDK put on the wire: {method, url, qs, host, range, retry}
  const created = new Set();

  before(async () => {
    workDir = await mkdtemp(path.join(tmpdir(), 'mediajobs-node-sdk-'));
    // Configured the way a user points the SDK at a self-hosted server: the URL goes to Ip, and the SDK
    // moves the official host (<bucket>.cos.<region>.myqcloud.com) into the Host header.
    cos = new COS({
      SecretId: SECRET_ID,
      SecretKey: SECRET_KEY,
      Ip: `127.0.0.1:${PORT}`,
      Protocol: 'http:',
      ConfCwd: workDir, // sliceUploadFile's UploadId cache, instead of ~/.config
      Timeout: 60_000,
    });
    cos.on('before-send', (opt) => {
      const headers = opt.headers || {};
      sent.push({
        method: opt.method,
        url: opt.url,
        qs: opt.qs || {},
        host: headers.Host,
        range: headers.Range,
        retry: Boolean(headers['x-cos-sdk-retry']),
      });
    });
  });

  after(async () => {
    if (cos) {
      for (const Key of created) {
        try {
          await cos.deleteObject({ Bucket, Region, Key });
        } catch {
          // best effort; the server's data dir is a temp dir anyway
        }
      }
    }
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  test('putObject then getObject returns the same bytes, ETag and CRC-64 header', async () => {
    const Key = `${PREFIX}small/hello.bin`;
    const body = Buffer.concat([Buffer.from('hello mediajobs\n'), randomBytes(64 * 1024 + 7)]);
    const put = await cos.putObject({ Bucket, Region, Key, Body: body });
    created.add(Key);
    assert.equal(put.statusCode, 200);
    assert.equal(put.ETag, `"${md5hex(body)}"`, 'PUT ETag must be the quoted MD5 of the body');
    assert.match(put.headers['x-cos-hash-crc64ecma'] ?? '', /^\d+$/, 'PUT must send x-cos-hash-crc64ecma');
    assert.ok(put.headers['x-cos-request-id'], 'PUT must send x-cos-request-id');

    const got = await cos.getObject({ Bucket, Region, Key });
    assert.equal(got.statusCode, 200);
    assert.ok(Buffer.isBuffer(got.Body));
    assert.equal(got.Body.length, body.length);
    assert.equal(md5hex(got.Body), md5hex(body), 'GET body differs from what was PUT');
    assert.equal(got.ETag, `"${md5hex(body)}"`);
    assert.equal(got.headers['content-length'], String(body.length));
    assert.equal(got.headers['x-cos-hash-crc64ecma'], put.headers['x-cos-hash-crc64ecma']);
    assert.ok(got.headers['last-modified'], 'GET must send Last-Modified');
  });

  test('headObject returns size, ETag and metadata without a body', async () => {
    const Key = `${PREFIX}small/meta.txt`;
    const body = Buffer.from('some text for HEAD\n');
    await cos.putObject({
      Bucket,
      Region,
      Key,
      Body: body,
      ContentType: 'text/plain',
      Headers: { 'x-cos-meta-author': 'alice' },
    });
    created.add(Key);

    const head = await cos.headObject({ Bucket, Region, Key });
    assert.equal(head.statusCode, 200);
    assert.equal(head.ETag, `"${md5hex(body)}"`);
    assert.equal(head.headers['content-length'], String(body.length));
    assert.match(head.headers['content-type'] ?? '', /^text\/plain/);
    assert.equal(head.headers['x-cos-meta-author'], 'alice');
    assert.match(head.headers['x-cos-hash-crc64ecma'] ?? '', /^\d+$/);
    assert.ok(head.headers['last-modified']);
  });

  test('getBucket lists by Prefix, and by Delimiter with CommonPrefixes', async () => {
    const base = `${PREFIX}list/`;
    const keys = [`${base}a.txt`, `${base}b.txt`, `${base}dir1/c.txt`, `${base}dir1/d.txt`, `${base}dir2/e.txt`];
    for (const Key of keys) {
      await cos.putObject({ Bucket, Region, Key, Body: Buffer.from(`content of ${Key}`) });
      created.add(Key);
    }

    const flat = await cos.getBucket({ Bucket, Region, Prefix: base });
    assert.equal(flat.statusCode, 200);
    assert.equal(flat.IsTruncated, 'false');
    assert.deepEqual(
      flat.Contents.map((c) => c.Key),
      [...keys].sort(),
      'Prefix listing must return exactly the keys under the prefix, in order',
    );
    for (const c of flat.Contents) {
      assert.equal(c.Size, String(Buffer.byteLength(`content of ${c.Key}`)));
      assert.equal(c.ETag, `"${md5hex(Buffer.from(`content of ${c.Key}`))}"`);
    }
    assert.deepEqual(flat.CommonPrefixes, []);

    const nested = await cos.getBucket({ Bucket, Region, Prefix: `${base}dir1/` });
    assert.deepEqual(
      nested.Contents.map((c) => c.Key),
      [`${base}dir1/c.txt`, `${base}dir1/d.txt`],
    );

    const tree = await cos.getBucket({ Bucket, Region, Prefix: base, Delimiter: '/' });
    assert.equal(tree.statusCode, 200);
    assert.deepEqual(
      tree.Contents.map((c) => c.Key),
      [`${base}a.txt`, `${base}b.txt`],
    );
    assert.deepEqual(
      tree.CommonPrefixes.map((p) => p.Prefix),
      [`${base}dir1/`, `${base}dir2/`],
    );
  });

  test('sliceUploadFile of a 20 MB file, then downloadFile and getObject are byte-exact', async () => {
    const Key = `${PREFIX}big/random-20mb.bin`;
    const size = 20 * 1024 * 1024;
    const src = path.join(workDir, 'upload.bin');
    const data = randomBytes(size);
    await writeFile(src, data);
    const srcMd5 = md5hex(data);

    const up = await cos.sliceUploadFile({ Bucket, Region, Key, FilePath: src, onProgress: () => {} });
    created.add(Key);
    assert.equal(up.statusCode, 200);
    assert.ok(up.UploadId, 'sliceUploadFile should report the UploadId it used');
    // 1 MiB default chunks -> 20 parts; a multipart ETag is "<hex>-<number of parts>" (spec 1.5).
    assert.match(up.ETag ?? '', /^"[0-9a-f]{32}-20"$/, `multipart ETag was ${up.ETag}`);

    const isBig = (r) => r.url.endsWith('/random-20mb.bin');
    const parts = sent.filter((r) => isBig(r) && r.method === 'PUT' && r.qs.partNumber !== undefined);
    assert.equal(parts.length, 20, 'expected 20 Upload Part requests');

    const head = await cos.headObject({ Bucket, Region, Key });
    assert.equal(head.headers['content-length'], String(size));
    assert.equal(head.ETag, up.ETag);

    // downloadFile: HEAD, then ranged GETs (checks Content-Range totals and CRC-64 per part).
    const dst = path.join(workDir, 'download.bin');
    const rangedBefore = sent.filter((r) => isBig(r) && r.method === 'GET' && r.range).length;
    const down = await cos.downloadFile({ Bucket, Region, Key, FilePath: dst, onProgress: () => {} });
    assert.ok(down);
    assert.equal(await md5File(dst), srcMd5, 'downloadFile content differs from the uploaded file');
    assert.equal((await readFile(dst)).length, size);
    const ranged = sent.filter((r) => isBig(r) && r.method === 'GET' && r.range).length - rangedBefore;
    assert.equal(ranged, 20, 'downloadFile should fetch a 20 MB object as 20 ranged GETs of 1 MiB');

    // Plain GET into a buffer.
    const got = await cos.getObject({ Bucket, Region, Key });
    assert.equal(got.statusCode, 200);
    assert.equal(got.Body.length, size);
    assert.equal(md5hex(got.Body), srcMd5, 'getObject content differs from the uploaded file');
    assert.match(got.headers['x-cos-hash-crc64ecma'] ?? '', /^\d+$/);
    assert.equal(got.headers['x-cos-hash-crc64ecma'], head.headers['x-cos-hash-crc64ecma']);
  });

  test('deleteObject removes the object', async () => {
    const Key = `${PREFIX}delete/me.txt`;
    await cos.putObject({ Bucket, Region, Key, Body: Buffer.from('short-lived') });
    created.add(Key);
    const del = await cos.deleteObject({ Bucket, Region, Key });
    assert.equal(del.statusCode, 204);
    created.delete(Key);

    await assert.rejects(cos.headObject({ Bucket, Region, Key }), (err) => {
      assert.equal(err.statusCode, 404);
      return true;
    });
    const listing = await cos.getBucket({ Bucket, Region, Prefix: `${PREFIX}delete/` });
    assert.deepEqual(listing.Contents, []);
  });

  test('getObject of a missing key fails with NoSuchKey / 404', async () => {
    const Key = `${PREFIX}missing/does-not-exist.bin`;
    await assert.rejects(cos.getObject({ Bucket, Region, Key }), (err) => {
      assert.equal(err.statusCode, 404);
      assert.equal(err.code, 'NoSuchKey');
      assert.ok(err.headers?.['x-cos-request-id'], 'error responses must carry x-cos-request-id');
      return true;
    });
  });

  test('every request went to 127.0.0.1 with the virtual-hosted Host header and none was retried', () => {
    assert.ok(sent.length > 0);
    const host = `${Bucket}.cos.${Region}.myqcloud.com`;
    for (const r of sent) {
      assert.ok(r.url.startsWith(`http://127.0.0.1:${PORT}/`), `request left 127.0.0.1: ${r.method} ${r.url}`);
      assert.equal(r.host, host, `${r.method} ${r.url}`);
    }
    const retried = sent.filter((r) => r.retry);
    assert.deepEqual(retried, [], 'the SDK retried requests (it does that after 5xx or network errors)');
  });
});
