#!/usr/bin/env bash
# docker/smoke.sh [IMAGE]: the built image on CPU (Mesa EGL), from the repo root or anywhere:
#   1. a real closed-loop episode (embedded model, adaptive3, libero_object task 0) writes episodes.jsonl to a
#      host directory mounted as outputs/; nothing else is mounted, so the configs and the checkpoint it uses are the
#      installed wheel's (the record's checkpoint must lie in the image's venv);
#   2. with this checkout mounted read-only at /src (the image holds no sources and no tests): the installed package
#      is a wheel of this checkout's sim_eval/ (docker/check_installed.py), then the non-simulator tests pass in the
#      image's environment.
# ENGINE picks the container CLI (docker, else podman); RUN_ARGS adds options to every run (docker/README.md).
set -euo pipefail

IMAGE=${1:-${IMAGE:-sim_eval:cpu}}
ENGINE=${ENGINE:-$(command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && echo docker || echo podman)}
read -r -a engine <<<"$ENGINE"  # may carry global options: ENGINE="podman --runtime runc"
read -r -a run_args <<<"${RUN_ARGS:-}"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mktemp -d "${TMPDIR:-/tmp}/sim_eval_smoke.XXXXXX")
chmod 0777 "$out"  # the image's user (uid 1000) writes here, whoever runs this script
t0=$(date +%s)
stamp() { echo "[smoke +$(($(date +%s) - t0))s] $*"; }

stamp "$ENGINE run $IMAGE: one episode -> $out"
"${engine[@]}" run --rm "${run_args[@]}" -e WANDB_MODE=disabled -v "$out:/opt/sim_eval/outputs" "$IMAGE" \
  policy.cache=adaptive3 'eval.tasks=[0]' eval.episodes_per_task=1 logger.mode=disabled hydra.run.dir=outputs/smoke
records="$out/smoke/episodes.jsonl"
test -s "$records" || { echo "smoke: no $records" >&2; exit 1; }
python3 - "$records" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
assert len(records) == 1 and not records[0].get("error"), records[0].get("error")
r = records[0]
assert r["checkpoint"].startswith("/opt/venv/"), f"checkpoint {r['checkpoint']} is not the installed package's"
print(f"smoke: episodes.jsonl: {len(records)} record, success={r['success']}, steps={r['steps']}, "
      f"renderer={r.get('device', {}).get('renderer')}, checkpoint={r['checkpoint']}")
EOF
t1=$(date +%s)

stamp "$ENGINE run $IMAGE: the installed wheel is this checkout's sim_eval/; python -m pytest -q -m 'not sim' (/src)"
"${engine[@]}" run --rm "${run_args[@]}" -v "$repo:/src:ro" -w /src --entrypoint /usr/bin/tini "$IMAGE" \
  -- sh -c 'python docker/check_installed.py /src && exec python -m pytest -q -m "not sim" -p no:cacheprovider tests'
stamp "passed: episode $((t1 - t0))s, tests $(($(date +%s) - t1))s"
rm -rf "$out" 2>/dev/null || echo "[smoke] left $out (files of the image user)"
