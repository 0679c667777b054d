import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { acceptsGzip, gzipJoiner } from '../src/kernel/gzip-join.js';

describe('gzipJoiner', () => {
  it('gives one gzip member that decodes to head + tail, with the head kept or replaced as it changes', async () => {
    const join = gzipJoiner();
    const big = Array.from({ length: 20_000 }, (_, i) => `floodgate_line_waiting{item="é-${i}"} 0\n`).join('');
    const cases: [string, string][] = [
      [big, 'tail\n'],
      [big, ''], // an empty tail: the CRC is the head's alone
      [big, 'x'.repeat(100_000)],
      [`${big}changed\n`, 'tail\n'],
      ['', 'only a tail\n'],
      ['', ''],
    ];
    for (const [head, tail] of cases) expect(gunzipSync(await join(head, tail)).toString('utf8')).toBe(head + tail);
  });
});

describe('acceptsGzip', () => {
  it('reads gzip, x-gzip and * from Accept-Encoding, with q=0 refusing', () => {
    const yes = ['gzip', 'GZIP', 'x-gzip', 'deflate, gzip;q=0.5', 'br, *', 'gzip, deflate, br, zstd'];
    const no = [undefined, '', 'identity', 'gzip;q=0', 'gzip; q=0.000', 'br, *;q=0', '*, gzip;q=0'];
    expect(yes.filter((h) => !acceptsGzip(h))).toEqual([]);
    expect(no.filter((h) => acceptsGzip(h))).toEqual([]);
  });
});
