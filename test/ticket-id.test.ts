import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { makeTicketId, parseTicketId, verifyBinding, verifySeq } from '../src/queue/ticket-id.js';

const S1 = 'a'.repeat(64);
const S2 = 'b'.repeat(64);
const half = (secret: string, msg: string) => createHmac('sha256', secret).update(msg).digest().subarray(0, 8);

describe('ticket ids', () => {
  it('are the MACs of their arguments, whatever ids were made before (the cache of recent ids never answers for other arguments)', () => {
    const b = { joinedRel: 12, userId: 'u1' };
    const first = makeTicketId('item-1', 7, S1, b);
    // The same seq and user under another secret (an item re-created), another join time (a
    // Redis rollback handing the seq to a new join), another user, another item: all differ.
    const others = [makeTicketId('item-1', 7, S2, b), makeTicketId('item-1', 7, S1, { ...b, joinedRel: 13 }), makeTicketId('item-1', 7, S1, { ...b, userId: 'u2' }), makeTicketId('item-2', 7, S1, b)];
    expect(new Set([first, ...others]).size).toBe(5);
    for (let i = 0; i < 25_000; i++) makeTicketId('item-1', 100 + i, S1, b); // past the cache's size
    expect(makeTicketId('item-1', 7, S1, b)).toBe(first);
    expect(makeTicketId('item-1', 7, S2, b)).toBe(others[0]);
    // What it is, computed apart: base64url(item).seq36.(HMAC("s"‖seq)[0..8] ‖ HMAC("u"‖seq|rel|user)[0..8]).
    const tag = Buffer.concat([half(S1, 's7'), half(S1, 'u7|12|u1')]).toString('base64url');
    expect(first).toBe(`${Buffer.from('item-1').toString('base64url')}.7.${tag}`);
    const parsed = parseTicketId(first)!;
    expect(verifySeq(parsed, S1) && verifyBinding(parsed, S1, b)).toBe(true);
    expect(verifySeq(parsed, S2) || verifyBinding(parsed, S1, { ...b, joinedRel: 13 })).toBe(false);
  });
});

describe('a ticket id spelt otherwise', () => {
  const AL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  /** The same bytes, the last base64url character's unused low bits set otherwise. */
  const otherBits = (b64: string) => b64.slice(0, -1) + AL[AL.indexOf(b64.at(-1)!) ^ 1];

  it('is no id: a seq with leading zeros, base64url with stray bits (each was the same ticket, with an admission token of its own)', () => {
    const id = makeTicketId('item-1', 7, S1, { joinedRel: 12, userId: 'u1' });
    const [item, seq, tag] = id.split('.');
    expect(parseTicketId(id)).not.toBeNull();
    // 'item-1' is 6 bytes: base64url of 8 characters, no unused bits; 'item-12' (7 bytes) has some.
    const id7 = makeTicketId('item-12', 7, S1, { joinedRel: 12, userId: 'u1' });
    const [item7] = id7.split('.');
    expect(Buffer.from(otherBits(item7), 'base64url').toString()).toBe('item-12');
    expect(Buffer.from(otherBits(tag), 'base64url').equals(Buffer.from(tag, 'base64url'))).toBe(true);
    for (const other of [`${item}.0${seq}.${tag}`, `${item}.${seq}.${otherBits(tag)}`, `${otherBits(item7)}.${seq}.${id7.split('.')[2]}`]) expect(parseTicketId(other), other).toBeNull();
  });
});
