#!/usr/bin/env bash
# Cancel a running training job on SLURM (scancel) once it has written a checkpoint, start the study
# again, and check that the job is resubmitted and resumes from that checkpoint.
#   cluster/local_slurm.sh start && bash benchmarks/slurm_scancel_resume.sh
# Study: the smoke world, math only, one variant, one seed, 120 OPD steps with a checkpoint every 5.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
scontrol ping > /dev/null || { echo "no SLURM controller: cluster/local_slurm.sh start" >&2; exit 1; }
W=$(mktemp -d)
mkdir -p "$W/configs"
"$PY" - "$ROOT/configs/smoke.yaml" "$W/configs/sc.yaml" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["study"] = "scancel"
c["tasks"] = {"math": c["tasks"]["math"]}
c["variants"] = [{"divergence": "reverse_kl", "design": "opd_plus"}]
c["seeds"] = [0]
c["opd"].update(steps=120, checkpoint_every=5, eval_every=20, bias_every=20)
yaml.safe_dump(c, open(sys.argv[2], "w"))
PY
RUN=results/scancel/math/reverse_kl-opd_plus/seed0
SMK="$PY -m snakemake --snakefile $ROOT/Snakefile --directory $W --configfile configs/sc.yaml --profile $ROOT/profiles/slurm"
cd "$W"
$SMK > run1.log 2>&1 &
PID=$!
for _ in $(seq 1 6000); do  # cancel as soon as the training run has written a checkpoint
  ls -d $RUN/work/checkpoints/step_* > /dev/null 2>&1 && break
  sleep 0.2
done
JOB=$(squeue -h -t R -o "%i %k" | awk '$2 ~ /^rule_train_/ {print $1}' | head -1)
echo "checkpoint at the cancel: $(ls -d $RUN/work/checkpoints/step_*)"
echo "scancel of SLURM job $JOB ($(squeue -h -j "$JOB" -o %k))"
scancel "$JOB"
wait "$PID"; echo "first run exit code: $? (the cancelled job fails the run)"
$SMK > run2.log 2>&1; echo "second run exit code: $?"
grep -h "resuming from" results/scancel/logs/train/math/reverse_kl-opd_plus/seed0.log
echo "train jobs in sacct:"
sacct -X -n -P -S now-1hours -o JobID,Comment,State,Elapsed | grep "rule_train_wildcards_math_reverse_kl-opd_plus_0" \
  | grep -E "^($JOB|$(grep -o 'submitted with SLURM jobid [0-9]*' run2.log | awk '{print $5}' | paste -sd'|'))\|"
"$PY" -c "
import json
rows = [json.loads(l) for l in open('$RUN/metrics.jsonl')]
steps = [r['step'] for r in rows]
print('metrics steps:', steps[0], '...', steps[-1], 'each once:', steps == list(range(121)))
print('summary steps:', json.load(open('$RUN/summary.json'))['steps'])
"
echo "scratch folder: $W"
