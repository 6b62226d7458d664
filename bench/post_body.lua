-- wrk script for bench/http_bench.sh: POSTs the same body on every request.
--   wrk ... -s bench/post_body.lua URL -- BODY_FILE CONTENT_TYPE
-- The body is read once per thread (init runs before wrk builds its static request), so the
-- script costs nothing per request.
wrk.method = "POST"

function init(args)
  local path, content_type = args[1], args[2]
  if not path or not content_type then
    error("usage: wrk -s post_body.lua URL -- BODY_FILE CONTENT_TYPE")
  end
  local file = assert(io.open(path, "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = content_type
end
