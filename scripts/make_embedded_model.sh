#!/usr/bin/env bash
# The embedded model's recipe end to end on one machine that carries LIBERO (a GPU node with the offline bundle, or
# any CUDA machine with sim_eval installed): record the scripted expert's demonstrations, pack them uncompressed (no
# encoder needed: training happens where they were recorded), train, then score the last checkpoint on held-out init
# states (40-44, never among the 0-19 success is reported on).
#   scripts/make_embedded_model.sh OUT [sim_eval.train overrides...]
# Env: WORKERS (recording and evaluation processes, default: all cores), PLACEMENTS (start layouts per task, 52),
# FIRST_SEED (the first placement seed; the recorder's record.first_seed where unset), TOPUP_TASKS (e.g. 0,1,5,6:
# after the main recording, TOPUP_PLACEMENTS more layouts (12) for those tasks, from the seed after the main ones).
# The shipped model is two runs of this script, the second warm-started from the first (its model card says how).
set -euo pipefail
out=${1:?usage: make_embedded_model.sh OUT [train overrides...]}
shift
workers=${WORKERS:-$(nproc)}
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

placements=${PLACEMENTS:-52}
first=${FIRST_SEED:-$(python -c 'from sim_eval.demos.recorder import RecordOptions; print(RecordOptions.first_seed)')}
demos=("$out/demos")

stamp record
python -m sim_eval.record policy=scripted suite=libero_object record.placements="$placements" \
  record.first_seed="$first" record.frame_stride=3 record.num_workers="$workers" out="$out/demos"
if [ -n "${TOPUP_TASKS:-}" ]; then
  stamp "top-up: tasks $TOPUP_TASKS"
  python -m sim_eval.record policy=scripted suite=libero_object "eval.tasks=[$TOPUP_TASKS]" \
    record.placements="${TOPUP_PLACEMENTS:-12}" record.first_seed=$((first + placements)) record.frame_stride=3 \
    record.num_workers="$workers" out="$out/topup"
  demos+=("$out/topup")
fi
stamp export
python -m sim_eval.export "${demos[@]}" --out "$out/data" --codec raw
stamp train
python -m sim_eval.train data="$out/data" out="$out/train" "$@"
last=$(ls -d "$out"/train/checkpoints/step_* | sort -t_ -k2 -n | tail -1)
stamp "held-out selection run: $last"
python -m sim_eval policy.checkpoint="$last" policy.cache=full eval.first_episode=40 eval.episodes_per_task=5 \
  eval.num_workers="$workers" logger.mode=disabled hydra.run.dir="$out/heldout"
stamp done
