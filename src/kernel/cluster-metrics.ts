/**
 * /metrics when several daemon processes share one port (FLOODGATE_PROCESSES): a scrape lands on
 * whichever worker the connection went to, so each worker alone would show its own counters and a
 * rate taken over successive scrapes would jump between processes. Instead the worker that gets
 * the scrape asks the primary, which asks every worker for its metrics and answers with them
 * aggregated by prom-client's rules: counters and histograms summed, Node's process metrics as
 * prom-client defines. (The per-item gauges, a picture of Redis the same in every process, are
 * added by the worker that answers: item-gauges.ts.) Counters and histograms never go down: a
 * worker that does not answer in time is counted at its last answer, and a dead worker's last
 * counts are kept (summed into `retired`). They went down by the dead worker's counts at each
 * death, which Prometheus reads as a counter reset: rate() spiked and those counts were lost.
 */
import cluster from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { Metrics } from './metrics.js';

const SCRAPE = 'floodgate:scrape';
const SCRAPE_RES = 'floodgate:scrape-res';
const COLLECT = 'floodgate:collect';
const COLLECT_RES = 'floodgate:collect-res';
const ITEMS = 'floodgate:items';
/** An item missing from the workers' item lists this long has its series hidden (a worker drops its own after a minute: daemon.ts). */
const HIDE_AFTER_MS = 30_000;
const TIMEOUT_MS = 5000;

interface Msg {
  type: string;
  id: number;
  text?: string;
  metrics?: object[];
  /** ITEMS: every item defined, as a worker read it. */
  ids?: string[];
  error?: string;
}

/**
 * In the primary: answers workers' scrapes with every worker's metrics, aggregated. Only workers
 * that listen are asked (one still starting has no metrics to give, and would not answer), and one
 * that dies or disconnects before it answered is counted out at once: either way the scrape used
 * to wait the whole TIMEOUT_MS for it, at every replacement of a worker and all through a crash loop.
 */
export function servePrimaryMetrics() {
  let next = 0;
  const listening = new Set<number>();
  /** Each live worker's last metrics, and the summed counters and histograms of the dead. */
  const last = new Map<number, object[]>();
  let retired: Promise<object[]> = Promise.resolve([]);
  const cumulative = (m: object[]) => m.filter((x) => ['counter', 'histogram'].includes((x as { type?: string }).type ?? ''));
  const pending = new Map<number, { asked: Set<number>; parts: object[][]; from: Set<number>; done(): void }>();
  const answered = (id: number, workerId: number, metrics?: object[]) => {
    const p = pending.get(id);
    if (!p || !p.asked.delete(workerId)) return;
    if (metrics) {
      p.parts.push(metrics);
      p.from.add(workerId);
    }
    if (p.asked.size === 0) p.done();
  };
  cluster.on('listening', (worker) => listening.add(worker.id));
  const gone = (worker: { id: number }) => {
    listening.delete(worker.id);
    const final = last.get(worker.id);
    last.delete(worker.id);
    if (final) {
      // A scrape under way counts this worker once, among its parts: its answer, or its last one
      // if it had not answered (or was not asked); not again among the dead (it read the counts
      // twice, and the next scrape went down: a counter reset to Prometheus), since a scrape adds
      // `retired` as it was when it began.
      for (const p of pending.values()) if (!p.from.has(worker.id)) p.parts.push(final);
      retired = retired.then((sum) => AggregatorRegistry.aggregate([sum, cumulative(final)].filter((x) => x.length)).getMetricsAsJSON() as Promise<object[]>).catch(() => []);
    }
    for (const id of [...pending.keys()]) answered(id, worker.id);
  };
  // The series of items no longer defined. Each worker drops its own once an item is missing from
  // two of its reads a minute apart (daemon.ts), each on its own round; a dead worker's, summed into
  // `retired`, were kept for good (a removed item's counter fell to the dead worker's share and
  // stayed), and the live workers' went one by one (the sum fell by each share, read as counter
  // resets). From the item lists the workers send, the primary hides an item's series in every
  // part at once when it has been missing 30 s — before any worker drops its own, which takes a
  // minute from its first read that missed it — and drops it from `retired`.
  const missingSince = new Map<string, number>();
  const hidden = new Set<string>();
  type Part = { values?: { labels?: { item?: unknown } }[] }[];
  const itemsIn = (part: object[], into: Set<string>) => {
    for (const m of part as Part) for (const v of m.values ?? []) if (typeof v.labels?.item === 'string') into.add(v.labels.item);
  };
  const without = (part: object[], items: Set<string>): object[] => (items.size ? (part as Part).map((m) => ({ ...m, values: (m.values ?? []).filter((v) => !items.has(v.labels?.item as string)) })) : part);
  const itemsDefined = (ids: Set<string>) => {
    retired = retired.then((sum) => {
      const now = Date.now();
      const present = new Set<string>();
      itemsIn(sum, present);
      for (const part of last.values()) itemsIn(part, present);
      for (const item of present) {
        if (ids.has(item)) {
          missingSince.delete(item);
          hidden.delete(item);
        } else if (!missingSince.has(item)) missingSince.set(item, now);
        else if (now - missingSince.get(item)! >= HIDE_AFTER_MS) hidden.add(item);
      }
      for (const item of [...missingSince.keys()]) if (!present.has(item)) missingSince.delete(item);
      for (const item of [...hidden]) if (!present.has(item) || ids.has(item)) hidden.delete(item);
      return without(sum, hidden);
    });
  };
  cluster.on('disconnect', gone);
  cluster.on('exit', gone);
  cluster.on('message', (worker, msg: Msg) => {
    if (msg?.type === ITEMS && Array.isArray(msg.ids)) return itemsDefined(new Set(msg.ids));
    if (msg?.type === COLLECT_RES) {
      if (msg.metrics) last.set(worker.id, msg.metrics);
      return answered(msg.id, worker.id, msg.metrics);
    }
    if (msg?.type !== SCRAPE) return;
    const id = next++;
    const live = Object.values(cluster.workers ?? {}).filter((w) => w?.isConnected() && listening.has(w.id));
    const reply = (text: string | undefined, error?: string) => worker.isConnected() && worker.send({ type: SCRAPE_RES, id: msg.id, text, error });
    const finish = () => {
      clearTimeout(timer);
      if (!pending.delete(id)) return;
      // A worker that did not answer in time (busy, dying) is counted at its last answer rather than
      // failing the scrape; the dead are counted at theirs.
      for (const w of p.asked) {
        const known = last.get(w);
        if (known) p.parts.push(known);
      }
      // (The dead as the scrape began: those that died since are among its parts.)
      retiredBefore
        .then((sum) => AggregatorRegistry.aggregate((sum.length ? [...p.parts, sum] : p.parts).map((part) => without(part, hidden))).metrics())
        .then(
          (text) => reply(text),
          (err) => reply(undefined, String(err)),
        );
    };
    const retiredBefore = retired;
    const p = { asked: new Set(live.map((w) => w!.id)), parts: [] as object[][], from: new Set<number>(), done: finish };
    const timer = setTimeout(finish, TIMEOUT_MS);
    pending.set(id, p);
    if (p.asked.size === 0) return finish();
    for (const w of live) w!.send({ type: COLLECT, id });
  });
}

/** In a worker: tells the primary which items are defined (every round of dropping removed items' series). */
export function tellItems(ids: Iterable<string>): void {
  process.send?.({ type: ITEMS, id: 0, ids: [...ids] });
}

/** In a worker: answers the primary's collects, and returns the scrape the /metrics route uses. */
export function workerMetrics(metrics: Metrics): () => Promise<string> {
  let next = 0;
  const waiting = new Map<number, (m: Msg) => void>();
  process.on('message', (msg: Msg) => {
    if (msg?.type === COLLECT)
      void metrics.registry
        .getMetricsAsJSON()
        .then(
          (m) => process.send?.({ type: COLLECT_RES, id: msg.id, metrics: m }),
          (err) => process.send?.({ type: COLLECT_RES, id: msg.id, error: String(err) }),
        );
    else if (msg?.type === SCRAPE_RES) {
      waiting.get(msg.id)?.(msg);
      waiting.delete(msg.id);
    }
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = next++;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error('the primary process did not answer the scrape'));
      }, TIMEOUT_MS + 1000);
      waiting.set(id, (m) => {
        clearTimeout(timer);
        if (m.error !== undefined || m.text === undefined) reject(new Error(m.error ?? 'no metrics'));
        else resolve(m.text);
      });
      process.send!({ type: SCRAPE, id });
    });
}
