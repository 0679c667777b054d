--[[
  Reads what the daemon's cached view of an item is made of, in one step: a refresh of the item
  cache (queue/snapshot.ts). One script instead of MULTI + four reads: one command and one reply
  to decode instead of six, which halved the daemon's CPU per refresh (each active item is read
  every FLOODGATE_CACHE_MS).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] gate  KEYS[4] stock
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] probe: a seq whose record to return ('' none)
  Returns { meta, ctr, gate as flat field/value arrays, the stock shards' values, the tickets
    returned to the head (the retry zset, on the item's slot: admitted before every one in the
    line, so a place in the line counts them), the record at ctr seq (the newest ticket's; '' for
    none), the record at `probe` ('' for none) }
  The last two let the caller see a rollback that its counters hide: a Redis rolled back, then
  joined to again up to the seq it had seen, holds other tickets at those seqs (queue/item-cache.ts).
]]
local ctr = redis.call('HGETALL', K.ctr)
local seq = tonumber(redis.call('HGET', K.ctr, 'seq') or '0')
local function recordAt(s)
  if not s or s < 1 then return '' end
  return redis.call('HGET', keyOf.page(s), string.format('%d', s)) or ''
end
return { redis.call('HGETALL', K.meta), ctr, redis.call('HGETALL', K.gate), redis.call('HVALS', K.stock), redis.call('ZCARD', K.base .. 'retry'), recordAt(seq), recordAt(tonumber(ARGV[2])) }
