import { recentMap } from '../kernel/recent-map.js';
import type { CachedRecord } from './views.js';

/**
 * The immutable part of waiting tickets (user, join time) under their verified ids, so a repeated
 * poll needs no Redis read and no HMAC; bounded by two generations (kernel/recent-map.ts). Keyed
 * by the whole ticket id: a hit means the id's tag was verified when it was stored.
 */
export const createRecordCache = (max: number) => recentMap<string, CachedRecord>(max);
