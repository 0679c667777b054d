import { describe, expect, it } from 'vitest';
import { parseAnswer } from '../src/service/handlers/webhook-answer.js';

/**
 * A downstream's answer as a ticket's result: a number a double cannot hold is kept as the digits
 * sent (a string), also where a key is given twice (lossless-json refuses that; JSON.parse takes
 * the last), and what is no JSON stays text, whatever its numbers (a review of the fallback: a
 * number as a key, or with leading zeros, was turned into JSON).
 */
describe("a webhook answer's numbers", () => {
  it('keeps inexact numbers as their digits where a key is given twice, the last value winning', () => {
    expect(parseAnswer('{"orderId":12345678901234567891,"note":"x","note":"y"}')).toEqual({ orderId: '12345678901234567891', note: 'y' });
    expect(parseAnswer('{ "a" : 1 , "a" : 12345678901234567890 , "s" : "9007199254740993 \\" 1e400" }')).toEqual({ a: '12345678901234567890', s: '9007199254740993 " 1e400' });
    expect(parseAnswer('{"b":[1e400,-98765432109876543210,0.5,2],"b":[{"c":1,"c":-1e400}]}')).toEqual({ b: [{ c: '-1e400' }] });
    expect(parseAnswer('{"x":1,"x":2}')).toEqual({ x: 2 });
  });

  it('leaves what is no JSON as text, numbers and all', () => {
    for (const text of ['{"id":012345678901234567890}', '{"a":1,"a":2,12345678901234567890:1}', '{"a":1,"a":-0123456789012345678901}', '{"a":1,"a":12345678901234567890.}', 'not json 12345678901234567890'])
      expect(parseAnswer(text), text).toBe(text);
  });
});
