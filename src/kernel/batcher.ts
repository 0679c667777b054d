/**
 * Collects concurrent requests into batches: a batch is flushed when it holds `maxBatch` requests
 * or `maxWaitMs` after its first request, and at most `concurrency` batches run at once (more
 * requests wait and form the next, larger batch). Each caller gets its own result or the batch's
 * error.
 */
export function createBatcher<Req, Res>(
  run: (batch: Req[]) => Promise<Res[]>,
  opts: { maxBatch: number; maxWaitMs: number; concurrency?: number },
): { submit(req: Req): Promise<Res>; drain(): Promise<void> } {
  type Pending = { req: Req; resolve(r: Res): void; reject(e: unknown): void };
  let queue: Pending[] = [];
  let timer: NodeJS.Timeout | null = null;
  let running = 0;
  const inflight = new Set<Promise<void>>();
  const limit = opts.concurrency ?? 2;

  const flush = () => {
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
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
        else timer ??= setTimeout(flush, opts.maxWaitMs);
      });
    },
    async drain() {
      flush();
      while (inflight.size || queue.length) await Promise.all([...inflight]);
    },
  };
}
