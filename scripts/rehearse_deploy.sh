#!/usr/bin/env bash
# Rehearse docs/DEPLOY.md on a real AWS account: the steps that need a cloud, in order.
#
#   DIVSWEEP_REGISTRY_URL=postgresql+psycopg://divsweep@DB-HOST/divsweep \
#   DIVSWEEP_REDIS_ADDRESS=REDIS-HOST:6379 \
#   bash scripts/rehearse_deploy.sh YOUR-BUCKET
#
# Needs: aws credentials (the cluster launcher's), `pip install "ray[default]" boto3 divsweep`,
# and cluster.yaml's EDIT values set (region, AMI) except the three this script fills in from its
# arguments and environment. Costs a CPU head and one GPU worker for ~30 minutes. Not part of the
# test suite (CI reaches no cloud); every other command of docs/DEPLOY.md is run by a test.
set -euo pipefail
cd "$(dirname "$0")/.."
bucket="${1:?usage: rehearse_deploy.sh BUCKET}"
: "${DIVSWEEP_REGISTRY_URL:?set DIVSWEEP_REGISTRY_URL (docs/DEPLOY.md step 2)}"
: "${DIVSWEEP_REDIS_ADDRESS:?set DIVSWEEP_REDIS_ADDRESS (docs/DEPLOY.md step 4)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# cluster.yaml with this rehearsal's bucket, database and Redis (the EDIT lines of step 2-4)
sed -e "s#s3://YOUR-BUCKET/divsweep#s3://$bucket/divsweep#" \
    -e "s#postgresql+psycopg://divsweep@YOUR-DB-HOST/divsweep#$DIVSWEEP_REGISTRY_URL#" \
    -e "s#YOUR-REDIS-HOST:6379#$DIVSWEEP_REDIS_ADDRESS#" cluster.yaml >"$work/cluster.yaml"
cfg="$work/cluster.yaml"
token="$(openssl rand -hex 16)"
sed -i "s#^setup_commands:#setup_commands:\n  - echo 'export DIVSWEEP_TOKENS={\"rehearsal\": \"$token\"}' >> ~/.bashrc#" "$cfg"

step() { printf '\n== %s\n' "$*"; }

step "1. Ray's token and the bucket"
[ -f ~/.ray/auth_token ] || ray get-auth-token --generate
aws s3 mb "s3://$bucket"

step "6. ray up"
ray up -y "$cfg"
ray attach "$cfg" -p 8000 --no-config-cache -- sleep 3600 &
tunnel=$!
trap 'kill $tunnel 2>/dev/null || true; ray down -y "$cfg"; aws s3 rb --force "s3://$bucket"; rm -rf "$work"' EXIT
export DIVSWEEP_URL=http://127.0.0.1:8000 DIVSWEEP_TOKEN="$token"
for _ in $(seq 1 60); do curl -fsS "$DIVSWEEP_URL/readyz" >/dev/null 2>&1 && break; sleep 5; done
id="$(divsweep submit smoke)"
echo "submitted $id; a cold cluster: the 202 named the worker types it waits for"
divsweep status "$id" | head -20

step "4. the head restarts under GCS fault tolerance while the sweep runs"
sleep 120
ray up -y --restart-only "$cfg"
divsweep watch "$id"

step "7. logs"
ray exec "$cfg" 'tail -n 50 ~/divsweep-service.log'
ray exec "$cfg" "source ~/venv/bin/activate && ray job logs divsweep-$id | tail -n 20"

step "8. upgrade in place"
ray up -y "$cfg"
divsweep submit smoke --wait
step "done: ray down and the bucket's removal follow"
