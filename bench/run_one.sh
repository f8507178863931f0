#!/usr/bin/env bash
# Start a fresh gofly server, warm it up, run bench/loadtest.py once against it, stop it.
#
#   bench/run_one.sh OUT.json PORT [loadtest options...]
#
# The server's backends come from the environment, exactly as for `manage.py gofly_serve`:
# GOFLY_DATA_DIR (required here, so a benchmark never touches the default var/), and for the
# production-like setup DATABASE_URL and REDIS_URL. The server log goes to OUT.json.server.log,
# the load generator's progress to OUT.json.stderr. Only the server this script started is
# stopped, by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: bench/run_one.sh OUT.json PORT [loadtest options...]}
port=${2:?usage: bench/run_one.sh OUT.json PORT [loadtest options...]}
shift 2
: "${GOFLY_DATA_DIR:?set GOFLY_DATA_DIR to a scratch directory}"
py=.venv/bin/python
url="http://127.0.0.1:${port}"

$py manage.py migrate -v0
# Without the starter bot: the figures are of the message path, not of the bot answering.
$py manage.py gofly_demo --no-bot >/dev/null
site=$($py manage.py shell -c "from chat.models import Site; print(Site.objects.order_by('id').first().key)" 2>/dev/null | tail -1)
cookie=$($py -m bench.agent_session)

$py manage.py gofly_serve --port "$port" --no-scheduler >"${out}.server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT

for _ in $(seq 60); do
    curl -fs -o /dev/null "${url}/healthz" && break
    sleep 0.5
done
curl -fs -o /dev/null "${url}/healthz"

# Warm-up: the first requests import and initialise lazily; keep that out of "RSS before".
$py -m bench.loadtest --url "$url" --site "$site" --agent-cookie "$cookie" --server-pid "$pid" \
    --visitors 20 --agents 1 --senders 5 --rate 10 --duration 2 --max-seconds 60 \
    >/dev/null 2>"${out}.warmup.stderr"
sleep 2

$py -m bench.loadtest --url "$url" --site "$site" --agent-cookie "$cookie" --server-pid "$pid" \
    "$@" >"$out" 2>"${out}.stderr"
echo "wrote $out (server pid $pid)" >&2
