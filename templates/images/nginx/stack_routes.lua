-- The instances the edge routes each service to, changed while nginx runs.
--
-- A reload would start new workers and make the old ones close their idle keep-alive
-- connections, racing requests clients are sending on them: HTTP/1.1 clients see the connection
-- closed with no answer, and do not retry a POST. So the upstreams' peers live in a shared
-- dictionary instead, replaced at once for every worker by a PUT on the edge's own socket
-- (stack-edge routes), and `balancer_by_lua` picks from them; a reload is only for a new
-- configuration. The document is {"auth": ["172.18.0.5:3000", ...], "payments": [...]}.

local balancer = require "ngx.balancer"
local cjson = require "cjson.safe"

local M = {}

local shared = ngx.shared.stack_routes
local SERVICES = { auth = true, payments = true }
-- Passive health check, as nginx's max_fails=3 fail_timeout=10s: a peer that fails three times
-- within 10 s is left out for the rest of them, unless every peer is.
local MAX_FAILS = 3
local FAIL_TIMEOUT = 10

-- This worker's copy of the routes, decoded once per version.
local version_seen
local peers_of = {}
-- Per worker and service: where the round robin goes on.
local turn = {}

local function parse_peer(text)
  if type(text) ~= "string" then
    return nil
  end
  local a, b, c, d, port = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+):(%d+)$")
  if not a then
    return nil
  end
  for _, octet in ipairs({ a, b, c, d }) do
    if tonumber(octet) > 255 then
      return nil
    end
  end
  port = tonumber(port)
  if port < 1 or port > 65535 then
    return nil
  end
  return {
    host = a .. "." .. b .. "." .. c .. "." .. d,
    port = port,
    key = text,
  }
end

-- The routes document decoded and checked: service -> list of peers, or nil and why not.
local function decode(body)
  local doc = cjson.decode(body)
  if type(doc) ~= "table" then
    return nil, "not a JSON object"
  end
  local routes = {}
  for service, list in pairs(doc) do
    if not SERVICES[service] then
      return nil, "unknown service " .. tostring(service)
    end
    if type(list) ~= "table" then
      return nil, service .. ": not a list"
    end
    local peers = {}
    for i, text in ipairs(list) do
      local peer = parse_peer(text)
      if not peer then
        return nil, service .. ": address " .. i .. " is not IPv4:port"
      end
      peers[i] = peer
    end
    routes[service] = peers
  end
  return routes
end

local function store(body)
  local routes, err = decode(body)
  if not routes then
    return nil, err
  end
  local ok, set_err = shared:set("routes", body)
  if not ok then
    return nil, "cannot store the routes: " .. set_err
  end
  shared:incr("version", 1, 0)
  return routes
end

-- init_by_lua: the routes stack-edge last pushed, so a reload or restart starts routed.
function M.init(path)
  local file = io.open(path, "r")
  if not file then
    return
  end
  local body = file:read("*a")
  file:close()
  local _, err = store(body)
  if err then
    ngx.log(ngx.ERR, "stack_routes: ignoring ", path, ": ", err)
  end
end

-- content_by_lua of PUT /routes on the edge's socket: replaces the routes, 204; 400 with why
-- when the document is not valid, and the routes stay as they were.
function M.put()
  if ngx.req.get_method() ~= "PUT" then
    return ngx.exit(ngx.HTTP_NOT_ALLOWED)
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  local _, err = store(body or "")
  if err then
    ngx.status = ngx.HTTP_BAD_REQUEST
    ngx.say(err)
    return ngx.exit(ngx.HTTP_BAD_REQUEST)
  end
  return ngx.exit(ngx.HTTP_NO_CONTENT)
end

local function current(service)
  local version = shared:get("version")
  if version ~= version_seen then
    peers_of = decode(shared:get("routes") or "{}") or {}
    version_seen = version
  end
  return peers_of[service] or {}
end

-- Per worker, as nginx keeps its own peers' failures without a `zone`: address -> {count,
-- since}.
local failures = {}

local function resting(peer)
  local f = failures[peer.key]
  return f ~= nil and f.count >= MAX_FAILS and ngx.now() - f.since < FAIL_TIMEOUT
end

local function note_failure(key)
  local now = ngx.now()
  local f = failures[key]
  if f == nil or now - f.since >= FAIL_TIMEOUT then
    failures[key] = { count = 1, since = now }
  else
    f.count = f.count + 1
  end
end

-- The addresses this request was sent to so far, from $upstream_addr ("a, b", with a " : "
-- after the one that just failed).
local function tried_so_far()
  local tried = {}
  for address in (ngx.var.upstream_addr or ""):gmatch("%d+%.%d+%.%d+%.%d+:%d+") do
    tried[address] = true
    tried.last = address
  end
  return tried
end

-- balancer_by_lua of a service's upstream: round robin over its routed instances, leaving out
-- resting ones; a retry (proxy_next_upstream) goes to an instance not tried yet. The first try
-- of a request, the common case, touches no per-request state.
function M.balance(service)
  local peers = current(service)
  local count = #peers
  if count == 0 then
    -- No instance routed (a restore, say): nginx falls back to the upstream's one server,
    -- marked down, and answers 502, which the site makes a 503.
    return
  end
  local tried
  local state = balancer.get_last_failure()
  if state then
    tried = tried_so_far()
    if state == "failed" and tried.last then
      note_failure(tried.last)
    end
  elseif count > 1 then
    -- Each instance at most once; proxy_next_upstream_tries caps the total. With this
    -- upstream's one placeholder server the count includes this first try (lua-nginx-module
    -- 0.10.23: n gives n tries in all, as tests/edge_routes.rs checks).
    balancer.set_more_tries(count)
  end

  local start = turn[service] or 0
  local chosen, fallback
  for i = 1, count do
    local peer = peers[(start + i - 1) % count + 1]
    if not (tried and tried[peer.key]) then
      if not resting(peer) then
        chosen = peer
        turn[service] = (start + i) % count
        break
      end
      fallback = fallback or peer
    end
  end
  chosen = chosen or fallback
  if not chosen then
    return ngx.exit(ngx.ERROR)
  end
  local ok, err = balancer.set_current_peer(chosen.host, chosen.port)
  if not ok then
    ngx.log(ngx.ERR, "stack_routes: cannot route to ", chosen.key, ": ", err)
    return ngx.exit(ngx.ERROR)
  end
end

return M
