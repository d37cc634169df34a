#!/usr/bin/env bash
# The paired cache study (docs/study_libero_object): every arm of sim_eval/conf/arm/ on the same episodes (replay2, the
# zero-compute baseline, right after cache2: the two spend the same number of full inferences), then the adaptive
# threshold calibrated from the full arm's lag MAE, then adaptive3 at that threshold. Each arm resumes where its
# records stop, so the script can be rerun until done. STUDY_DEADLINE_S: start no arm after that many seconds;
# STUDY_ARMS: the arms to run (default all); STUDY_FULL_DIR: the full arm's run dir to calibrate from (default OUT/full).
#   scripts/run_study.sh OUT_DIR [overrides for every arm...]
set -euo pipefail
out=${1:?usage: run_study.sh OUT_DIR [overrides...]}
shift
common=(policy.shadow=true eval.episodes_per_task=20 "$@")
deadline=${STUDY_DEADLINE_S:-0}
start=$SECONDS
late() { ((deadline > 0 && SECONDS - start > deadline)); }
for arm in ${STUDY_ARMS:-full control cache2 replay2 cache3 cache4 adaptive3}; do
  if late; then echo "run_study: deadline reached before arm $arm" >&2; exit 0; fi
  python3 -m sim_eval arm="$arm" "${common[@]}" hydra.run.dir="$out/$arm"
done
if late; then echo "run_study: deadline reached before the calibrated arm" >&2; exit 0; fi
python3 -m sim_eval.calibrate "${STUDY_FULL_DIR:-$out/full}" --target-refresh "${STUDY_TARGET_REFRESH:-0.3}" --json "$out/calibration.json"
threshold=$(python3 -c "import json, sys; print(round(json.load(open(sys.argv[1]))['replay']['threshold'], 3))" \
  "$out/calibration.json")
python3 -m sim_eval arm=adaptive3 policy.refresh.threshold="$threshold" "${common[@]}" \
  hydra.run.dir="$out/adaptive3_calibrated"
