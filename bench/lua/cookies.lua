-- wrk script: each request carries the next cookie from a file, one per line.
-- Arguments after `--`: cookie file, method, path. The requests are built once, in
-- `init`, so that wrk spends as little time per request as it can.
local requests = {}
local next_index = 1

function init(args)
  for cookie in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format(args[2], args[3], { ["Cookie"] = cookie })
  end
  -- Threads start at different places in the list.
  next_index = math.random(#requests)
end

function request()
  local request = requests[next_index]
  next_index = next_index % #requests + 1
  return request
end
