// End-to-end test: processing on upload (Pic-Operations) through cos-nodejs-sdk-v5.
//
// Run by tests/e2e/test_pictures_upload.py, which starts the server and sets:
//   MEDIAJOBS_TEST_PORT, MEDIAJOBS_TEST_SECRET_ID, MEDIAJOBS_TEST_SECRET_KEY,
//   MEDIAJOBS_TEST_BUCKET, MEDIAJOBS_TEST_REGION
// The images are PNGs written here by hand (zlib from node:zlib), so the test needs no image library.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { deflateSync } from 'node:zlib';

for (const name of ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy']) {
  delete process.env[name];
}

const require = createRequire(import.meta.url);
const COS = require('cos-nodejs-sdk-v5');

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is not set (see tests/e2e/test_pictures_upload.py)`);
  return value;
}

const PORT = Number.parseInt(env('MEDIAJOBS_TEST_PORT'), 10);
const Bucket = env('MEDIAJOBS_TEST_BUCKET');
const Region = env('MEDIAJOBS_TEST_REGION');
const PREFIX = `node-pic/${Date.now().toString(36)}-${randomBytes(4).toString('hex')}/`;
const md5hex = (buf) => createHash('md5').update(buf).digest('hex');

// CRC-32 for PNG chunks.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
// An RGB PNG of random pixels (incompressible, so a 1000x1000 one is ~3 MB: enough for 3 parts).
function noisePng(width, height) {
  const rows = [];
  for (let y = 0; y < height; y++) rows.push(Buffer.from([0]), randomBytes(width * 3));
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.concat(rows), { level: 1 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
function pngSize(buf) {
  assert.equal(buf.subarray(1, 4).toString('ascii'), 'PNG', 'not a PNG');
  return [buf.readUInt32BE(16), buf.readUInt32BE(20)];
}
function jpegSize(buf) {
  assert.equal(buf.readUInt16BE(0), 0xffd8, 'not a JPEG');
  let i = 2;
  while (i < buf.length) {
    const marker = buf[i + 1];
    const len = buf.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xc2) return [buf.readUInt16BE(i + 7), buf.readUInt16BE(i + 5)];
    i += 2 + len;
  }
  throw new Error('no SOF marker');
}
const asList = (x) => (Array.isArray(x) ? x : [x]);

describe('Pic-Operations through cos-nodejs-sdk-v5', () => {
  let cos;
  let workDir;
  const completes = [];

  before(async () => {
    workDir = await mkdtemp(path.join(tmpdir(), 'mediajobs-node-pic-'));
    cos = new COS({
      SecretId: env('MEDIAJOBS_TEST_SECRET_ID'),
      SecretKey: env('MEDIAJOBS_TEST_SECRET_KEY'),
      Ip: `127.0.0.1:${PORT}`,
      Protocol: 'http:',
      ConfCwd: workDir,
      Timeout: 60_000,
    });
    cos.on('before-send', (opt) => {
      if (opt.method === 'POST' && opt.qs && opt.qs.uploadId !== undefined) completes.push(opt.headers || {});
    });
  });

  after(async () => {
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  test('putObject with a Pic-Operations header answers UploadResult and stores the outputs', async () => {
    const Key = `${PREFIX}put/source.png`;
    const body = noisePng(320, 200);
    const ops = {
      is_pic_info: 1,
      rules: [
        { fileid: 'thumb.jpg', rule: 'imageMogr2/thumbnail/160x/format/jpg' },
        { fileid: `/${PREFIX}abs/half.png`, rule: 'imageMogr2/thumbnail/!50p' },
      ],
    };
    const put = await cos.putObject({ Bucket, Region, Key, Body: body, Headers: { 'Pic-Operations': JSON.stringify(ops) } });
    assert.equal(put.statusCode, 200);
    assert.equal(put.ETag, `"${md5hex(body)}"`);
    const result = put.UploadResult;
    assert.ok(result, `no UploadResult in ${JSON.stringify(put)}`);
    assert.equal(result.OriginalInfo.Key, Key);
    assert.equal(result.OriginalInfo.ImageInfo.Format, 'PNG');
    assert.equal(result.OriginalInfo.ImageInfo.Width, '320');
    const [thumb, half] = asList(result.ProcessResults.Object);
    assert.equal(thumb.Key, `${PREFIX}put/thumb.jpg`);
    assert.equal(half.Key, `${PREFIX}abs/half.png`);

    const gotThumb = await cos.getObject({ Bucket, Region, Key: thumb.Key });
    assert.deepEqual(jpegSize(gotThumb.Body), [160, 100]);
    assert.equal(thumb.ETag, `"${md5hex(gotThumb.Body)}"`);
    const gotHalf = await cos.getObject({ Bucket, Region, Key: half.Key });
    assert.deepEqual(pngSize(gotHalf.Body), [160, 100]);
    assert.equal(half.Size, String(gotHalf.Body.length));
  });

  test('uploadFile in parts sends Pic-Operations with Complete and rebuilds UploadResult', async () => {
    const Key = `${PREFIX}multi/big.png`;
    const body = noisePng(1000, 1000);
    const file = path.join(workDir, 'big.png');
    await writeFile(file, body);
    const ops = { is_pic_info: 1, rules: [{ fileid: 'big-small.jpg', rule: 'imageMogr2/thumbnail/250x/format/jpg' }] };
    const up = await cos.uploadFile({
      Bucket,
      Region,
      Key,
      FilePath: file,
      SliceSize: 1024 * 1024, // multipart from 1 MB
      ChunkSize: 1024 * 1024,
      Headers: { 'Pic-Operations': JSON.stringify(ops) },
    });
    assert.equal(up.statusCode, 200);
    assert.ok(completes.some((h) => h['Pic-Operations']), 'the SDK should send Pic-Operations on Complete');
    assert.match(up.ETag ?? '', /^"[0-9a-f]{32}-\d+"$/);
    const result = up.UploadResult;
    assert.ok(result, `no UploadResult in ${JSON.stringify(up)}`);
    assert.equal(result.OriginalInfo.Key, Key);
    assert.equal(result.OriginalInfo.ImageInfo.Width, '1000');
    const obj = asList(result.ProcessResults.Object)[0];
    assert.equal(obj.Key, `${PREFIX}multi/big-small.jpg`);
    assert.equal(obj.Width, '250');
    const got = await cos.getObject({ Bucket, Region, Key: obj.Key });
    assert.deepEqual(jpegSize(got.Body), [250, 250]);
    const original = await cos.getObject({ Bucket, Region, Key });
    assert.equal(md5hex(original.Body), md5hex(body));
  });
});
