#!/usr/bin/env bash
# The embedded model's recipe end to end on one machine that carries LIBERO (a GPU node with the offline bundle, or
# any CUDA machine with sim_eval installed): record the scripted expert's demonstrations, pack them uncompressed (no
# encoder needed: training happens where they were recorded), train, then score the last checkpoint on held-out init
# states (40-44, never among the 0-19 success is reported on).
#   scripts/make_embedded_model.sh OUT [sim_eval.train overrides...]
# Env: WORKERS (recording and evaluation processes, default: all cores), PLACEMENTS (start layouts per task, 52).
set -euo pipefail
out=${1:?usage: make_embedded_model.sh OUT [train overrides...]}
shift
workers=${WORKERS:-$(nproc)}
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

stamp record
python -m sim_eval.record policy=scripted suite=libero_object record.placements="${PLACEMENTS:-52}" \
  record.frame_stride=3 record.num_workers="$workers" out="$out/demos"
stamp export
python -m sim_eval.export "$out/demos" --out "$out/data" --codec raw
stamp train
python -m sim_eval.train data="$out/data" out="$out/train" "$@"
last=$(ls -d "$out"/train/checkpoints/step_* | sort -t_ -k2 -n | tail -1)
stamp "held-out selection run: $last"
python -m sim_eval policy.checkpoint="$last" policy.cache=full eval.first_episode=40 eval.episodes_per_task=5 \
  eval.num_workers="$workers" logger.mode=disabled hydra.run.dir="$out/heldout"
stamp done
