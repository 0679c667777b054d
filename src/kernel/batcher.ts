/**
 * Collects concurrent requests into batches: a batch is flushed when it holds `maxBatch` requests
 * or `maxWaitMs` after its first request (0: once the current turn of the event loop is done),
 * and at most `concurrency` batches run at once (more requests wait and form the next, larger
 * batch). Each caller gets its own result or the batch's error.
 */
export function createBatcher<Req, Res>(
  run: (batch: Req[]) => Promise<Res[]>,
  opts: { maxBatch: number; maxWaitMs: number; concurrency?: number },
): { submit(req: Req): Promise<Res>; drain(): Promise<void> } {
  type Pending = { req: Req; resolve(r: Res): void; reject(e: unknown): void };
  let queue: Pending[] = [];
  let timer: { cancel(): void } | null = null;
  const schedule = (fn: () => void) => {
    if (opts.maxWaitMs > 0) {
      const t = setTimeout(fn, opts.maxWaitMs);
      return { cancel: () => clearTimeout(t) };
    }
    const t = setImmediate(fn);
    return { cancel: () => clearImmediate(t) };
  };
  let running = 0;
  const inflight = new Set<Promise<void>>();
  const limit = opts.concurrency ?? 2;

  const flush = () => {
    timer?.cancel();
    timer = null;
    while (queue.length && running < limit) {
      const batch = queue.slice(0, opts.maxBatch);
      queue = queue.slice(batch.length);
      running++;
      const p = run(batch.map((b) => b.req))
        .then(
          (results) => batch.forEach((b, i) => b.resolve(results[i])),
          (err) => batch.forEach((b) => b.reject(err)),
        )
        .finally(() => {
          running--;
          inflight.delete(p);
          if (queue.length) flush();
        });
      inflight.add(p);
    }
  };

  return {
    submit(req) {
      return new Promise<Res>((resolve, reject) => {
        queue.push({ req, resolve, reject });
        if (queue.length >= opts.maxBatch) flush();
        else timer ??= schedule(flush);
      });
    },
    async drain() {
      flush();
      while (inflight.size || queue.length) await Promise.all([...inflight]);
    },
  };
}

/**
 * Turns a per-key call into a batch runner for createBatcher: the batch is split by `keyOf`, each
 * key's part goes to `run` (the keys' calls run concurrently), and the results come back in the
 * batch's order.
 */
export function perKey<Req, Res>(keyOf: (r: Req) => string, run: (key: string, reqs: Req[]) => Promise<Res[]>) {
  return async (batch: Req[]): Promise<Res[]> => {
    const out = new Array<Res>(batch.length);
    const groups = new Map<string, number[]>();
    batch.forEach((r, i) => {
      const g = groups.get(keyOf(r));
      if (g) g.push(i);
      else groups.set(keyOf(r), [i]);
    });
    await Promise.all(
      [...groups].map(async ([key, idx]) => {
        const res = await run(key, idx.map((i) => batch[i]));
        idx.forEach((i, j) => (out[i] = res[j]));
      }),
    );
    return out;
  };
}
