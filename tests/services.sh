#!/usr/bin/env bash
# Installs and starts what the tests talk to, on a fresh machine of this kind
# or one that already has them (then it only checks):
# - the Python packages of the interop tests (fastavro, pyiceberg,
#   confluent-kafka) and moto, whose S3 server the object-store test starts
#   itself on a loopback port;
# - Tansu 0.6.0, a Kafka-compatible broker written in Rust, on
#   127.0.0.1:9092 (K2_TEST_KAFKA names another broker and skips this);
# - Redis on 127.0.0.1:6379 when none answers there (K2_TEST_REDIS names
#   another and skips this);
# - the checkers of the operations files (actors/tests/operations.rs):
#   docker-compose (validates docker/compose.yml; no Docker daemon needed),
#   promtool (Debian's prometheus package: alert rules and their unit
#   tests) and systemd-analyze (config/k2.service), from apt when missing.
# The README's test command runs this before the tests; .ci/run too.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# About 30 s and 120 MB on Debian 12; the prometheus package's service is
# not started where systemd does not run (containers, CI).
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "${K2_TEST_REDIS:-}" ] && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save "" --appendonly no
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

if [ -n "${K2_TEST_KAFKA:-}" ]; then
  exit 0
fi
listening() { (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; }
if ! tansu --version 2>/dev/null | grep -q "0.6.0"; then
  # About 15 minutes on 2 cores, once per machine. The postgres feature is
  # for the consumer bench's second storage engine (actors/benches/kafka_consume.rs).
  CARGO_TARGET_DIR=/var/cache/tansu-build cargo install tansu --version 0.6.0 --locked --features dynostore,libsql,postgres
  rm -rf /var/cache/tansu-build
fi
if ! listening; then
  dir="$(mktemp -d /tmp/k2-tansu.XXXXXX)"
  # The SQLite engine: its memory engine skips records when a fetch starts
  # mid-batch.
  nohup tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine "sqlite:///$dir/tansu.db" >"$dir/tansu.log" 2>&1 &
  for _ in $(seq 1 100); do
    listening && break
    sleep 0.1
  done
fi
listening || { echo "tests/services.sh: Tansu did not start on 127.0.0.1:9092" >&2; exit 1; }
