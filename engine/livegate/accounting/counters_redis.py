"""The counters on Redis (counters.py says what they count): each call is one Lua script, atomic on the
server and timed by Redis' own clock (`TIME`), so instances whose clocks disagree still share one minute.

Keys (prefix `livegate:`): `rpm:<account>:<minute>` and `tpm:<account>:<minute>` (integers, expiring after two
minutes); `lease:<scope>` (a sorted set of holders by expiry); `spend:<counter>` (a float); per account
`holds:<account>` (holder -> amount), `holdexp:<account>` (holder by expiry) and `held:<account>` (their sum,
kept as holds come and go). One Redis server (or a primary with replicas): the scripts name keys they build,
which Redis Cluster does not allow.

redis-py's asyncio client is imported when a Redis is configured (the `redis` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from livegate.accounting.counters import COUNTER_TTL_S, Budget, CountersUnavailable, Refused

PREFIX = "livegate:"

_PRELUDE = """
local P = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local minute = math.floor(now / 60)
local function num(x) return string.format('%.17g', x) end
local function used(kind, account)
  return tonumber(redis.call('GET', P .. kind .. ':' .. account .. ':' .. minute) or '0')
end
local function held_total(account)
  local exp, amounts, total = P .. 'holdexp:' .. account, P .. 'holds:' .. account, P .. 'held:' .. account
  for _, h in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', num(now))) do
    local a = redis.call('HGET', amounts, h)
    if a then
      redis.call('INCRBYFLOAT', total, num(-tonumber(a)))
      redis.call('HDEL', amounts, h)
    end
    redis.call('ZREM', exp, h)
  end
  if redis.call('HLEN', amounts) == 0 then
    redis.call('DEL', total)
    return 0
  end
  return tonumber(redis.call('GET', total) or '0')
end
local function release_hold(account, holder)
  local amounts, total = P .. 'holds:' .. account, P .. 'held:' .. account
  local a = redis.call('HGET', amounts, holder)
  if a then
    redis.call('HDEL', amounts, holder)
    redis.call('INCRBYFLOAT', total, num(-tonumber(a)))
  end
  redis.call('ZREM', P .. 'holdexp:' .. account, holder)
end
"""

# ARGV: prefix, holder, ttl, n, (account, rpm)*n, m, (account, tpm)*m, k, (scope, limit or -1)*k
_ADMIT = _PRELUDE + """
local holder, ttl = ARGV[2], tonumber(ARGV[3])
local i = 4
local rpm, tpm, leases = {}, {}, {}
for _ = 1, tonumber(ARGV[i]) do rpm[#rpm + 1] = {ARGV[i + 1], tonumber(ARGV[i + 2])}; i = i + 2 end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do tpm[#tpm + 1] = {ARGV[i + 1], tonumber(ARGV[i + 2])}; i = i + 2 end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do leases[#leases + 1] = {ARGV[i + 1], tonumber(ARGV[i + 2])}; i = i + 2 end
for _, r in ipairs(rpm) do
  local n = used('rpm', r[1])
  if n >= r[2] then return {'rpm', r[1], num(r[2]), num(n)} end
end
for _, r in ipairs(tpm) do
  local n = used('tpm', r[1])
  if n >= r[2] then return {'tpm', r[1], num(r[2]), num(n)} end
end
for _, l in ipairs(leases) do
  local key = P .. 'lease:' .. l[1]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))
  if l[2] >= 0 and not redis.call('ZSCORE', key, holder) then
    local n = redis.call('ZCARD', key)
    if n >= l[2] then return {'parallel', l[1], num(l[2]), num(n)} end
  end
end
for _, r in ipairs(rpm) do
  local key = P .. 'rpm:' .. r[1] .. ':' .. minute
  redis.call('INCR', key)
  redis.call('EXPIRE', key, 120)
end
for _, l in ipairs(leases) do
  local key = P .. 'lease:' .. l[1]
  redis.call('ZADD', key, num(now + ttl), holder)
  redis.call('EXPIRE', key, math.ceil(ttl * 2))
end
return nil
"""

# ARGV: prefix, holder, ttl, amount, n, (account, counter, max_budget, seed)*n, m, (account, tpm)*m
_RESERVE = _PRELUDE + """
local holder, ttl, amount = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local i = 5
local budgets, tpm = {}, {}
for _ = 1, tonumber(ARGV[i]) do
  budgets[#budgets + 1] = {ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]}
  i = i + 4
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do tpm[#tpm + 1] = {ARGV[i + 1], tonumber(ARGV[i + 2])}; i = i + 2 end
for _, r in ipairs(tpm) do
  local n = used('tpm', r[1])
  if n >= r[2] then return {'tpm', r[1], num(r[2]), num(n)} end
end
for _, b in ipairs(budgets) do
  local key = P .. 'spend:' .. b[2]
  if redis.call('SET', key, b[4], 'NX', 'EX', """ + str(COUNTER_TTL_S) + """) then end
  local spend = tonumber(redis.call('GET', key))
  local held = held_total(b[1])
  if spend + held + amount > b[3] + 1e-12 then return {'budget', b[1], num(b[3]), num(spend + held)} end
end
for _, b in ipairs(budgets) do
  redis.call('HSET', P .. 'holds:' .. b[1], holder, num(amount))
  redis.call('ZADD', P .. 'holdexp:' .. b[1], num(now + ttl), holder)
  redis.call('INCRBYFLOAT', P .. 'held:' .. b[1], num(amount))
  for _, suffix in ipairs({'holds:', 'holdexp:', 'held:'}) do
    redis.call('EXPIRE', P .. suffix .. b[1], """ + str(COUNTER_TTL_S) + """)
  end
end
return nil
"""

# ARGV: prefix, n, (counter, amount, seed)*n, m, (account, tokens)*m, k, (account, holder)*k
_APPLY = _PRELUDE + """
local i = 2
for _ = 1, tonumber(ARGV[i]) do
  local key = P .. 'spend:' .. ARGV[i + 1]
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCRBYFLOAT', key, ARGV[i + 2])
  else
    redis.call('SET', key, num(tonumber(ARGV[i + 3]) + tonumber(ARGV[i + 2])))
  end
  redis.call('EXPIRE', key, """ + str(COUNTER_TTL_S) + """)
  i = i + 3
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  local key = P .. 'tpm:' .. ARGV[i + 1] .. ':' .. minute
  redis.call('INCRBY', key, ARGV[i + 2])
  redis.call('EXPIRE', key, 120)
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do release_hold(ARGV[i + 1], ARGV[i + 2]); i = i + 2 end
return nil
"""

# ARGV: prefix, ttl, n, (scope, holder)*n, m, (account, holder)*m
_RENEW = _PRELUDE + """
local ttl = tonumber(ARGV[2])
local i = 3
for _ = 1, tonumber(ARGV[i]) do
  local key = P .. 'lease:' .. ARGV[i + 1]
  redis.call('ZADD', key, num(now + ttl), ARGV[i + 2])
  redis.call('EXPIRE', key, math.ceil(ttl * 2))
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  if redis.call('HEXISTS', P .. 'holds:' .. ARGV[i + 1], ARGV[i + 2]) == 1 then
    redis.call('ZADD', P .. 'holdexp:' .. ARGV[i + 1], num(now + ttl), ARGV[i + 2])
  end
  i = i + 2
end
return nil
"""

# ARGV: prefix, n, (scope, holder)*n
_RELEASE = _PRELUDE + """
for i = 3, 2 * tonumber(ARGV[2]) + 1, 2 do redis.call('ZREM', P .. 'lease:' .. ARGV[i], ARGV[i + 1]) end
return nil
"""

# ARGV: prefix, n, scope*n -> live leases of each
_LIVE = _PRELUDE + """
local out = {}
for i = 3, 2 + tonumber(ARGV[2]) do
  local key = P .. 'lease:' .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))
  out[#out + 1] = redis.call('ZCARD', key)
end
return out
"""

# ARGV: prefix, account, counter -> {spend or false, held}
_BUDGET = _PRELUDE + """
return {redis.call('GET', P .. 'spend:' .. ARGV[3]) or false, num(held_total(ARGV[2]))}
"""


class RedisCounters:
    backend = "redis"

    def __init__(self, *, url: str | None = None, host: str | None = None, port: int = 6379,
                 password: str | None = None, timeout: float = 1.0) -> None:
        self._options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                         "health_check_interval": 10}
        self._url, self._host, self._port, self._password = url, host, port, password
        self.description = f"redis:{_where(url) if url else f'{host}:{port}'}"
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        import redis.asyncio as aioredis

        if self._url:
            self._client = aioredis.Redis.from_url(self._url, **self._options)
        else:
            self._client = aioredis.Redis(host=self._host or "127.0.0.1", port=self._port, password=self._password,
                                          **self._options)
        for name, source in (("admit", _ADMIT), ("reserve", _RESERVE), ("apply", _APPLY), ("renew", _RENEW),
                             ("release", _RELEASE), ("live", _LIVE), ("budget", _BUDGET)):
            self._scripts[name] = self._client.register_script(source)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _run(self, name: str, *args: Any) -> Any:
        import redis.exceptions

        if self._client is None:
            raise CountersUnavailable("the Redis client is closed")
        try:
            return await self._scripts[name](keys=[], args=[PREFIX, *args])
        except (redis.exceptions.RedisError, OSError) as exc:
            raise CountersUnavailable(f"Redis ({self.description}): {type(exc).__name__}: "
                                      f"{_first_line(exc)}") from None

    async def ping(self) -> None:
        import redis.exceptions

        if self._client is None:
            raise CountersUnavailable("the Redis client is closed")
        try:
            await self._client.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise CountersUnavailable(f"Redis ({self.description}): {type(exc).__name__}") from None

    async def admit(self, holder: str, rpm: Sequence[tuple[str, int]], tpm: Sequence[tuple[str, int]],
                    leases: Sequence[tuple[str, int | None]], ttl: float) -> Refused | None:
        args: list[Any] = [holder, ttl, *_pairs(rpm), *_pairs(tpm),
                           *_pairs([(scope, -1 if limit is None else limit) for scope, limit in leases])]
        return _refused(await self._run("admit", *args))

    async def renew(self, leases: Sequence[tuple[str, str]], holds: Sequence[tuple[str, str]], ttl: float) -> None:
        if leases or holds:
            await self._run("renew", ttl, *_pairs(leases), *_pairs(holds))

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        if leases:
            await self._run("release", *_pairs(leases))

    async def reserve(self, holder: str, budgets: Sequence[Budget], amount: float,
                      tpm: Sequence[tuple[str, int]], ttl: float) -> Refused | None:
        args: list[Any] = [holder, ttl, repr(float(amount)), len(budgets)]
        for b in budgets:
            args += [b.account, b.counter, repr(float(b.max_budget)), repr(float(b.seed))]
        args += _pairs(tpm)
        return _refused(await self._run("reserve", *args))

    async def apply(self, spend: Mapping[str, tuple[float, float]], tokens: Mapping[str, int],
                    settled: Sequence[tuple[str, str]]) -> None:
        if not (spend or tokens or settled):
            return
        args: list[Any] = [len(spend)]
        for counter, (amount, seed) in spend.items():
            args += [counter, repr(float(amount)), repr(float(seed))]
        args += [*_pairs(list(tokens.items())), *_pairs(settled)]
        await self._run("apply", *args)

    async def live(self, scopes: Sequence[str]) -> dict[str, int]:
        if not scopes:
            return {}
        counts = await self._run("live", len(scopes), *scopes)
        return {scope: int(n) for scope, n in zip(scopes, counts, strict=True)}

    async def budget(self, account: str, counter: str) -> tuple[float | None, float]:
        spend, held = await self._run("budget", account, counter)
        return (None if spend is None else float(spend)), float(held)


def _pairs(items: Sequence[tuple[Any, Any]]) -> list[Any]:
    out: list[Any] = [len(items)]
    for a, b in items:
        out += [a, b]
    return out


def _refused(answer: Any) -> Refused | None:
    if not answer:
        return None
    kind, name, limit, used = (x.decode() if isinstance(x, bytes) else str(x) for x in answer)
    return Refused(kind, name, float(limit), float(used))


def _where(url: str) -> str:
    """host:port/db of a redis:// URL, without user or password."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("?", 1)[0]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""
