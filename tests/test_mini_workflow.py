"""The mini study at smoke size end to end: a hub-format Qwen3 pair built here, then the paper path
(checkpoint tokenizer, chat template, LoRA, chunked log-probs, lm-eval, MLflow, the report)."""
import json
import shutil

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from test_packaging import ROOT
from test_workflow import _smk

pytestmark = pytest.mark.workflow
CONFIG = "configs/mini_smoke.yaml"


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    work = tmp_path_factory.mktemp("mini")
    shutil.copytree(ROOT / "configs", work / "configs")
    r = _smk(work, "--cores", "2", config=CONFIG)
    assert r.returncode == 0, r.stderr[-4000:]
    return work / "results" / "mini_smoke"


def test_the_pair_is_laid_out_like_hub_snapshots(mini):
    for role in ("teacher", "student"):
        folder = mini / "hub" / role
        for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja", "README.md"):
            assert (folder / f).exists(), (role, f)
        cfg = AutoConfig.from_pretrained(str(folder))
        assert cfg.model_type == "qwen3" and cfg.head_dim >= 32
        assert json.loads((folder / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    a, b = (AutoTokenizer.from_pretrained(str(mini / "hub" / r)) for r in ("teacher", "student"))
    assert a.get_vocab() == b.get_vocab() and (mini / "tokenizer" / "tokenizer.json").read_text() == \
        (mini / "hub" / "student" / "tokenizer.json").read_text()


def test_report_table_and_tracking(mini):
    md = (mini / "report" / "report.md").read_text()
    for row in ("teacher", "sft_init", "reverse_kl-opd", "reverse_kl-opd_plus"):
        assert f"| {row} " in md, row
    runs = json.loads((mini / "tracking" / "runs.json").read_text())["runs"]
    assert len(runs) == 2 + 2 and all(r["status"] == "FINISHED" for r in runs)


def test_training_took_the_pretrained_path(mini):
    run = mini / "math" / "reverse_kl-opd_plus" / "seed0"
    s = json.loads((run / "summary.json").read_text())
    assert s["spec"]["backend"]["student"]["adapter"]["type"] == "lora"
    assert s["config"]["logprob_chunk"] == 4 and s["config"]["micro_batch_size"] == 2
    final = AutoModelForCausalLM.from_pretrained(str(run / "final"))  # merged: loads plainly
    assert not any("lora" in n for n, _ in final.named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(str(mini / "math" / "sft_init" / "checkpoint")).named_parameters())
    changed = {n for n, p in final.named_parameters() if not torch.equal(p, base[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed)


def test_lm_eval_read_prompts_through_the_chat_template(mini):
    ev = json.loads((mini / "math" / "reverse_kl-opd_plus" / "seed0" / "eval.json").read_text())
    ctx = ev["samples"][0]["context"]
    assert ctx == f"<|im_start|>user\n{ev['samples'][0]['prompt']}<|im_end|>\n<|im_start|>assistant\n" \
                  "<think>\n\n</think>\n\n"


def test_cuda_on_a_machine_without_one_starts_no_job(mini, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    work = mini.parents[1]
    cfg = yaml.safe_load((work / "configs" / "mini_smoke.yaml").read_text())
    cfg["teacher"]["device"] = "cuda"
    (work / "configs" / "cuda.yaml").write_text(yaml.safe_dump(cfg))
    r = _smk(work, "--cores", "1", config="configs/cuda.yaml")
    assert r.returncode != 0 and "teacher.device = 'cuda', but" in r.stderr
    assert "Execute" not in r.stderr + r.stdout  # refused while the config was read


def _dag_rules(config: str) -> set[str]:
    # --forceall: the whole DAG, whatever results/ already holds (a finished study in the checkout)
    r = _smk(ROOT, "-n", "--forceall", "--cores", "8", "--quiet", "rules", config=str(ROOT / config))
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    return {line.split()[0] for line in (r.stdout + r.stderr).splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


def test_the_paper_dry_run_has_the_default_dag_shape():
    default = _dag_rules("configs/default.yaml")
    benchmarks = {"prepare_benchmark", "evaluate_benchmark_variant", "evaluate_benchmark_reference"}
    assert _dag_rules("configs/paper.yaml") == default | benchmarks  # the paper adds AIME24 / AIME25 / HMMT25
    group = {"self_distill_data", "self_distill_sft_examples"}  # the default's self-distillation group
    assert _dag_rules("configs/mini.yaml") == (default - group) | {"mini_pair"}
