"""The shared limiter's Lua scripts: each reservation, settlement and pause is one atomic script,
timed by Redis's own clock (``TIME``). ``workers.redis_limiter`` runs them; the rules they keep
are in its docstring and in ``workers.aimd`` (the same rules in Python).
"""

from __future__ import annotations

from workers.aimd import MAX_BUCKET_S, NEAR_CEILING

NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS[1] = state hash; ARGV = tokens, ceiling (req/s, 0: none), tpm, burst, probe window, ttl,
# start pace (req/s, 0: unpaced). Returns "wait|epoch|start|end|probe": the seconds to wait, the
# pause epoch the place was reserved in, the request TAT interval it took ('' when unpaced), and 1
# when this call is the probe after a pause (the gate is held for it). A negative wait means "not
# yet: ask again after -wait seconds".
ACQUIRE = (
    NOW
    + """
local tokens, ceiling, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local burst, probe_window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local start = tonumber(ARGV[7])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'p', 'g', 'probe', 'rate', 'ep')
local rtat, ttat = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local paused, gate, probe = tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
local rate, epoch = tonumber(s[6]), tonumber(s[7]) or 0
if now < paused then
  return string.format('%.6f|%d|||0', -(paused - now), epoch)
end
if now < gate then
  if probe == 1 then
    return string.format('%.6f|%d|||0', -math.min(gate - now, 0.25), epoch)
  end
  redis.call('HSET', KEYS[1], 'probe', 1)
  probe = 2  -- this call is the probe
end
if not rate and start > 0 then
  rate = start
end
if rate and ceiling > 0 and rate > ceiling then
  rate = ceiling
end
if rate then
  redis.call('HSET', KEYS[1], 'rate', string.format('%.6f', rate))
end
local wait, from, to = 0, '', ''
if rate then
  local new = math.max(rtat, now) + 1 / rate
  wait = math.max(wait, new - now - math.max(burst, 1 / rate))
  from, to = string.format('%.6f', math.max(rtat, now)), string.format('%.6f', new)
  redis.call('HSET', KEYS[1], 'r', to)
end
if tpm > 0 and tokens > 0 then
  local trate = tpm / 60
  local new = math.max(ttat, now) + tokens / trate
  wait = math.max(wait, new - now - math.max(burst, tokens / trate))
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', new))
end
if wait > 0 then
  redis.call('HSET', KEYS[1], 'b', string.format('%.6f', now))
end
redis.call('EXPIRE', KEYS[1], ttl)
return string.format('%.6f|%d|%s|%s|%d', math.max(wait, 0), epoch, from, to, probe == 2 and 1 or 0)
"""
)

# Drops the places given back (hash fields 'h:<end>' = start) that ended before ARGV[1].
DROP_HOLES = """
local function drop_holes(before)
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 2) == 'h:' and tonumber(string.sub(f, 3)) <= before then
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
"""

# ARGV = epoch, tokens, tpm, start, end (of the request place; '' when none), probe (1: the place
# was the probe's). Gives a place back as workers.ratelimit.give_back_place does, and a probe's
# gate to the next caller, unless a pause voided it (a newer epoch).
RELEASE = (
    NOW
    + DROP_HOLES
    + """
if (tonumber(redis.call('HGET', KEYS[1], 'ep')) or 0) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[6] == '1' then redis.call('HDEL', KEYS[1], 'probe') end  -- never sent: another may probe
local tokens, tpm, from, to = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
if tpm > 0 and tokens > 0 then
  local ttat = tonumber(redis.call('HGET', KEYS[1], 't')) or now
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', ttat - tokens / (tpm / 60)))
end
if to == '' then return 1 end
drop_holes(now)
if redis.call('HGET', KEYS[1], 'r') ~= to then
  redis.call('HSET', KEYS[1], 'h:' .. to, from)
  return 1
end
local tat = from
local before = redis.call('HGET', KEYS[1], 'h:' .. tat)
while before do
  redis.call('HDEL', KEYS[1], 'h:' .. tat)
  tat = before
  before = redis.call('HGET', KEYS[1], 'h:' .. tat)
end
redis.call('HSET', KEYS[1], 'r', tat)
return 1
"""
)

# ARGV = epoch. 1 when no pause began since the place was reserved in that epoch.
STILL_VALID = """
local epoch = tonumber(redis.call('HGET', KEYS[1], 'ep')) or 0
return epoch == tonumber(ARGV[1]) and 1 or 0
"""

# The goodput buckets, as workers.aimd.Goodput: successes (gc, last second's rate gl), rolled
# here; save_goodput() writes them back.
GOODPUT = """
local gs = tonumber(redis.call('HGET', KEYS[1], 'gs')) or now
local gc = tonumber(redis.call('HGET', KEYS[1], 'gc')) or 0
local gl = tonumber(redis.call('HGET', KEYS[1], 'gl')) or 0
if now - gs >= 1 then
  if now - gs < 2 then gl = gc / (now - gs) else gl = 0 end
  gs, gc = now, 0
end
local function save_goodput()
  redis.call('HSET', KEYS[1], 'gs', string.format('%.6f', gs), 'gc', gc, 'gl', string.format('%.6f', gl))
end
"""

# The recent calls and their 429s, as workers.aimd.Refusals: the current bucket (start rs, calls
# rc, 429s rr), the last closed one (rlc, rlr), the last call counted (ra). count_call(window
# calls, refused) counts one; grows_with_rate(noise share, noise count) and clear_refusals() as
# the Python ones.
REFUSALS = (
    f"local MAX_BUCKET = {MAX_BUCKET_S}\n"
    + """
local function clear_refusals()
  redis.call('HSET', KEYS[1], 'rs', string.format('%.6f', now), 'rc', 0, 'rr', 0, 'rlc', 0, 'rlr', 0)
end
local function count_call(window, refused)
  local at = tonumber(redis.call('HGET', KEYS[1], 'ra'))
  if not at or now - at >= MAX_BUCKET then clear_refusals() end
  local r = redis.call('HMGET', KEYS[1], 'rs', 'rc', 'rr', 'rlc', 'rlr')
  local rs, rc, rr = tonumber(r[1]) or 0, tonumber(r[2]) or 0, tonumber(r[3]) or 0
  local rlc, rlr = tonumber(r[4]) or 0, tonumber(r[5]) or 0
  if rc == 0 then rs = now end
  local elapsed = now - rs
  if elapsed >= MAX_BUCKET or (elapsed >= 1 and rc * 2 >= window) then
    rlc, rlr, rs, rc, rr = rc, rr, now, 0, 0
  end
  rc = rc + 1
  if refused then rr = rr + 1 end
  redis.call('HSET', KEYS[1], 'rs', string.format('%.6f', rs), 'ra', string.format('%.6f', now),
    'rc', rc, 'rr', rr, 'rlc', rlc, 'rlr', rlr)
end
local function grows_with_rate(share, count)
  local r = redis.call('HMGET', KEYS[1], 'rc', 'rr', 'rlc', 'rlr')
  local refused = (tonumber(r[2]) or 0) + (tonumber(r[4]) or 0)
  local calls = (tonumber(r[1]) or 0) + (tonumber(r[3]) or 0)
  return refused >= count and refused >= share * calls
end
"""
)

# ARGV = tokens to give back (negative: take more), tpm, ok, window full, ceiling, increase,
# min increase, ttl, cycle calls, decrease, window calls. A success raises the pace as
# workers.aimd.on_success (increase_per_second) does.
SETTLE = (
    NOW
    + GOODPUT
    + REFUSALS
    + """
local refund, tpm, ok, full = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4] == '1'
local ceiling, inc, min_inc = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if tpm > 0 and refund ~= 0 then
  local ttat = tonumber(redis.call('HGET', KEYS[1], 't')) or now
  redis.call('HSET', KEYS[1], 't', string.format('%.6f', ttat - refund / (tpm / 60)))
end
local paused = tonumber(redis.call('HGET', KEYS[1], 'p')) or 0
if now >= paused then
  redis.call('HDEL', KEYS[1], 'g', 'probe')
end
if ok then
  gc = gc + 1
  save_goodput()
  count_call(tonumber(ARGV[11]), false)
  local rate = tonumber(redis.call('HGET', KEYS[1], 'rate'))
  local bound = tonumber(redis.call('HGET', KEYS[1], 'b')) or 0
  if rate and not full and now - bound <= 1 then
    if redis.call('HGET', KEYS[1], 'pr') == '1' then
      rate = rate + 1
    else
      local cycle = (1 - tonumber(ARGV[10])) * rate * rate / tonumber(ARGV[9])
      rate = rate + math.max(min_inc, math.min(inc * rate, cycle)) / rate
    end
    if ceiling > 0 then rate = math.min(rate, ceiling) end
    redis.call('HSET', KEYS[1], 'rate', string.format('%.6f', rate))
  end
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[8]))
end
return 1
"""
)

# ARGV = pause (0: none), probe window, ttl, ceiling, decrease, ceiling decrease, hold, floor,
# unknown start, lower (1: lower the pace as workers.aimd.on_limited does, 429s that do not grow
# with the rate apart), the shortest pause that opens a probe gate, noise share, noise count,
# window calls. Then pauses the key.
LIMITED = (
    NOW
    + GOODPUT
    + REFUSALS
    + DROP_HOLES
    + f"local NEAR = {NEAR_CEILING}\n"
    + """
local pause, probe_window, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ceiling, dec, cdec = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local hold, floor, unknown = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local last = tonumber(redis.call('HGET', KEYS[1], 'ld'))
local lower = ARGV[10] == '1'
if lower then count_call(tonumber(ARGV[14]), true) end
if lower and (not last or now - last >= hold) and grows_with_rate(tonumber(ARGV[12]), tonumber(ARGV[13])) then
  save_goodput()  -- rolled as workers.aimd.Goodput.rate rolls it
  local good = math.max(gl, gc + gl * math.max(0, 1 - (now - gs)))
  local rate = tonumber(redis.call('HGET', KEYS[1], 'rate'))
  local factor = dec
  local at_ceiling = ceiling > 0 and rate and rate >= ceiling * NEAR
  if at_ceiling then factor = cdec end
  local base
  if not rate then
    if good > 0 then base = good else base = unknown / factor end
  elseif at_ceiling then
    base = rate
  elseif good > 0 then
    base = math.min(rate, good)
  else
    base = rate
  end
  local probing = 0
  if good <= 0 or not rate then probing = 1 end
  redis.call('HSET', KEYS[1], 'rate', string.format('%.6f', math.max(floor, factor * base)),
    'ld', string.format('%.6f', now), 'pr', probing)
  redis.call('HINCRBY', KEYS[1], 'nd', 1)
  clear_refusals()
end
if pause > 0 then
  local untl = now + pause
  local paused = tonumber(redis.call('HGET', KEYS[1], 'p')) or 0
  if untl > paused then
    redis.call('HSET', KEYS[1], 'p', string.format('%.6f', untl), 'r', string.format('%.6f', untl))
    if pause >= tonumber(ARGV[11]) then
      redis.call('HSET', KEYS[1], 'g', string.format('%.6f', untl + probe_window))
    end
    redis.call('HINCRBY', KEYS[1], 'ep', 1)
    drop_holes(math.huge)  -- the places before the pause are void
  end
  redis.call('HDEL', KEYS[1], 'probe')
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"""
)

# Returns rate ('' when unpaced), seconds of pause left, decreases.
PACE = (
    NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'rate', 'p', 'nd')
local paused = tonumber(s[2]) or 0
return {s[1] or '', string.format('%.6f', math.max(0, paused - now)), tonumber(s[3]) or 0}
"""
)
