/**
 * Finds a nonce such that SHA-256(challenge ‖ nonce) starts with `difficulty` zero bits, off the
 * page's thread. Message in: { challenge, difficulty }; out: { nonce, tries } and { progress }.
 */
const zeroBits = (h: Uint8Array, bits: number) => {
  for (let i = 0; bits > 0; i++, bits -= 8) {
    if (bits >= 8 ? h[i] !== 0 : h[i] >> (8 - bits) !== 0) return false;
  }
  return true;
};

self.onmessage = async (e: MessageEvent<{ challenge: string; difficulty: number }>) => {
  const { challenge, difficulty } = e.data;
  const enc = new TextEncoder();
  const expected = 2 ** difficulty;
  for (let n = 0; ; n++) {
    const nonce = n.toString(36);
    const h = new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(challenge + nonce)));
    if (zeroBits(h, difficulty)) return void postMessage({ nonce, tries: n + 1 });
    if (n % 4096 === 0) postMessage({ progress: Math.min(0.99, n / expected) });
  }
};
