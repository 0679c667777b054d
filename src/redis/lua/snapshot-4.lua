--[[
  Reads what the daemon's cached view of an item is made of, in one step: a refresh of the item
  cache (queue/snapshot.ts). One script instead of MULTI + four reads: one command and one reply
  to decode instead of six, which halved the daemon's CPU per refresh (each active item is read
  every FLOODGATE_CACHE_MS).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] gate  KEYS[4] stock
  ARGV[1] now (ms, the caller's clock; unused)
  Returns { meta, ctr, gate as flat field/value arrays, the stock shards' values, the tickets
    returned to the head (the retry zset, on the item's slot: admitted before every one in the
    line, so a place in the line counts them) }
]]
return { redis.call('HGETALL', K.meta), redis.call('HGETALL', K.ctr), redis.call('HGETALL', K.gate), redis.call('HVALS', K.stock), redis.call('ZCARD', K.base .. 'retry') }
