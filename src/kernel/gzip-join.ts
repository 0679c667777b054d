/**
 * A gzip body for `head + tail` whose large `head` is compressed once while it stays the same.
 *
 * /metrics is the per-item gauges (megabytes with 10,000 items, the same text scrape after scrape
 * while the items are idle) followed by prom-client's metrics (tens of kilobytes, new at each
 * scrape). Compressing the whole body per scrape would spend CPU on the same megabytes every time;
 * this compresses the head once per distinct text and only the tail per call, and joins the two
 * into one gzip member (RFC 1952), as pigz joins the pieces it compresses in parallel:
 *
 *   header (10 bytes) · deflate(head), ended by a sync flush (non-final, byte-aligned) ·
 *   deflate(tail), its last block final · CRC-32 of head + tail · their length mod 2^32
 *
 * The tail's deflate stream starts with an empty window, so none of its back-references reach
 * into the head: the joined blocks are one valid deflate stream. The CRC continues from the head's
 * (zlib.crc32's second argument), so the tail is the only text read per call.
 *
 * Compression runs on libuv's thread pool (zlib's async functions), not on the event loop.
 * zlib.crc32 needs Node 20.15 (package.json's engines).
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const deflateRaw = promisify(zlib.deflateRaw);

/**
 * zlib's fastest level: the gauges of 10,000 idle items (3.7 MB) take ~10 ms, the default level 6
 * ~22 ms for 3–11% fewer bytes (~0.21–0.23 MB; 3 Dec, the 2-core bench machine). The head is
 * compressed again only when an item's gauges change, so a busy daemon pays this at most once per
 * scrape, on the thread pool.
 */
const LEVEL = 1;
/** Magic, deflate, no flags, no mtime, no extra flags, OS unknown. */
const HEADER = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);

interface Head {
  text: string;
  deflated: Promise<{ blocks: Buffer; crc: number; size: number }>;
}

/** Returns `gzip(head, tail)`; keeps the last head's compressed form (one per caller, so no state is shared between daemons in a process). */
export function gzipJoiner(): (head: string, tail: string) => Promise<Uint8Array<ArrayBuffer>> {
  let last: Head | null = null;
  const headOf = (text: string): Head['deflated'] => {
    // Equal strings: a pointer compare when the caller hands the same string (item-gauges.ts keeps it).
    if (last?.text === text) return last.deflated;
    const buf = Buffer.from(text);
    const deflated = deflateRaw(buf, { level: LEVEL, finishFlush: zlib.constants.Z_SYNC_FLUSH }).then((blocks) => ({ blocks, crc: zlib.crc32(buf), size: buf.length }));
    const head: Head = { text, deflated };
    deflated.catch(() => {
      // A failed compression is not kept: the next call tries again.
      if (last === head) last = null;
    });
    last = head;
    return deflated;
  };
  return async (headText, tailText) => {
    const tail = Buffer.from(tailText);
    const [head, tailBlocks] = await Promise.all([headOf(headText), deflateRaw(tail, { level: LEVEL })]);
    const body = new Uint8Array(HEADER.length + head.blocks.length + tailBlocks.length + 8);
    body.set(HEADER);
    body.set(head.blocks, HEADER.length);
    body.set(tailBlocks, HEADER.length + head.blocks.length);
    const trailer = new DataView(body.buffer, body.length - 8);
    // Not crc32(empty, crc): for a zero-length buffer whose memory was touched (deflate does) Node
    // hands zlib a null pointer, and zlib then answers its initial value, 0 (Node 20.20).
    trailer.setUint32(0, tail.length ? zlib.crc32(tail, head.crc) : head.crc, true);
    trailer.setUint32(4, (head.size + tail.length) % 2 ** 32, true);
    return body;
  };
}

/** Whether an Accept-Encoding header accepts gzip (RFC 9110 12.5.3: `gzip`, `x-gzip` or `*`, q above 0). */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  let star = false;
  for (const part of header.split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const accepted = q === undefined || Number(q.slice(2)) > 0;
    if (name.trim() === 'gzip' || name.trim() === 'x-gzip') return accepted;
    if (name.trim() === '*') star = accepted;
  }
  return star;
}
