-- The effective gate: what admission obeys, from the gate hash's fields (strings; false or ''
-- = unset) and the daemon's in-flight cap for an auto gate its controller has not spoken for.
-- closed: nothing (0, 0). manual: the operator's rate and maxInFlight. auto: the controller's
-- limit (aLimit) and pace (aRate) under the operator's ceilings; before the controller has
-- spoken, the operator's maxInFlight or else `autoCap`.
-- Returns rate (per s) and maxInFlight, each nil for "no cap". queue/gate-rule.ts is the same
-- rule for what the daemon shows; test/redis-scripts.test.ts runs both over one table.
local function effectiveGate(mode, rate, maxInFlight, aLimit, aRate, autoCap)
  if mode == 'closed' then return 0, 0 end
  local r, m = tonumber(rate or ''), tonumber(maxInFlight or '')
  if mode ~= 'manual' then
    local limit, pace = tonumber(aLimit or ''), tonumber(aRate or '')
    if limit then m = math.min(m or limit, limit) elseif not m then m = tonumber(autoCap or '') end
    if pace then r = math.min(r or pace, pace) end
  end
  return r, m
end
