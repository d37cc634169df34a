#!/usr/bin/env bash
# On an air-gapped machine: make the bundle that scripts/bundle_libero.py wrote usable, then print the exports.
#   source <(scripts/offline_env.sh .bundle /tmp/sim_eval_site)
# GL/EGL loaders (Debian's glvnd .debs, only where the system lacks libEGL) go to /, the Python packages to SITE.
set -euo pipefail
bundle=${1:?usage: offline_env.sh BUNDLE_DIR [SITE_DIR]}
site=${2:-/tmp/sim_eval_site}
repo=$(cd "$(dirname "$0")/.." && pwd)
if ! ldconfig -p | grep -q 'libEGL.so.1' && [ -d "$bundle/gl" ]; then
  for deb in "$bundle"/gl/*.deb; do dpkg -x "$deb" /; done
  ldconfig
fi
python3 "$repo/scripts/bundle_libero.py" --out "$bundle" --unpack "$site" >&2
echo "export PYTHONPATH=$site:$repo\${PYTHONPATH:+:\$PYTHONPATH} MUJOCO_GL=egl"
