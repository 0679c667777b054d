--[[
  Blocks or unblocks a user for one item's line.
  KEYS[1] blocked (hash userId -> bits: 1 blocked for this item, 2 blocked everywhere)
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] userId  ARGV[3] bit (1|2)  ARGV[4] on: '1' set, '0' clear
  Returns the user's bits after the change.
]]
local bits = tonumber(redis.call('HGET', K.blocked, ARGV[2]) or '0')
local bit = tonumber(ARGV[3])
local has = math.floor(bits / bit) % 2 == 1
if ARGV[4] == '1' and not has then bits = bits + bit end
if ARGV[4] == '0' and has then bits = bits - bit end
if bits == 0 then redis.call('HDEL', K.blocked, ARGV[2]) else redis.call('HSET', K.blocked, ARGV[2], bits) end
return bits
