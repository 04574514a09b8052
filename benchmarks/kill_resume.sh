#!/usr/bin/env bash
# Kill a study mid-training (SIGKILL to Snakemake and its jobs), start it again, and check that it
# completes, resumes the interrupted runs from their checkpoints, and duplicates no MLflow run.
#   bash benchmarks/kill_resume.sh            (smoke config with 120 OPD steps, in a scratch folder)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
W=$(mktemp -d)
mkdir -p "$W/configs"
"$PY" - "$ROOT/configs/smoke.yaml" "$W/configs/kt.yaml" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["study"] = "killtest"
c["opd"].update(steps=120, checkpoint_every=5, eval_every=20, bias_every=20)
yaml.safe_dump(c, open(sys.argv[2], "w"))
PY
SMK="$PY -m snakemake --snakefile $ROOT/Snakefile --directory $W --configfile configs/kt.yaml --cores 2 --rerun-incomplete"
cd "$W"
setsid $SMK > run1.log 2>&1 &
PID=$!
for _ in $(seq 1 3000); do  # kill as soon as a run has written a checkpoint
  ls -d results/killtest/*/*/seed*/work/checkpoints/step_* > /dev/null 2>&1 && break
  sleep 0.2
done
echo "checkpoints at the kill:"; ls -d results/killtest/*/*/seed*/work/checkpoints/step_*
kill -KILL -- -"$PID"; sleep 1
$SMK --unlock > /dev/null 2>&1
$SMK > run2.log 2>&1; echo "second run exit code: $?"
grep -h "resuming from" results/killtest/logs/train/*/*/*.log
"$PY" -c "
import json
runs = json.load(open('results/killtest/tracking/runs.json'))['runs']
names = [r['run_name'] for r in runs]
print('MLflow runs:', len(names), 'distinct:', len(set(names)))
"
echo "scratch folder: $W"
