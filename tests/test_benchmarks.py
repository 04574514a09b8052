"""AIME24 / AIME25 / HMMT25 and DeepMath read from files in their real formats, refused when malformed,
and a real lm-eval run over a benchmark fixture graded by math-verify."""
import json
from pathlib import Path

import pytest

from opdpipe.tasks.benchmarks import BENCHMARKS, check_benchmarks, load_benchmark, prepare
from opdpipe.tasks.real import check_source, load_deepmath, read_local

FIXTURES = Path(__file__).parent / "fixtures"
REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("name, fixture, first_id, answers", [
    ("aime24", "aime24_sample.jsonl", "aime24-60", ["031", "58", "30"]),  # HuggingFaceH4/aime_2024 columns
    ("aime25", "aime25_sample.parquet", "aime25-1", ["70", "17", "11"]),  # MathArena: int64 answers
    ("hmmt25", "hmmt25_sample.parquet", "hmmt25-1", [r"\frac{1}{2}", r"2\sqrt{2}", r"\frac{5}{6}"]),
])
def test_benchmarks_load_from_real_format_files(name, fixture, first_id, answers):
    rows = load_benchmark(name, {"path": str(FIXTURES / fixture)})
    assert [r["answer"] for r in rows] == answers and rows[0]["id"] == first_id
    assert all(r["task"] == "math" and r["grader"] == "math_verify" and r"\boxed{}" in r["prompt"] for r in rows)
    assert rows[0]["prompt"].startswith(str(read_local(FIXTURES / fixture)[0]["problem"]))


def test_deepmath_reads_parquet_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = read_local(FIXTURES / "deepmath_sample.jsonl")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "train.parquet")
    assert load_deepmath({"path": str(tmp_path / "train.parquet")}) == load_deepmath(str(FIXTURES / "deepmath_sample.jsonl"))


def test_sources_refused_with_key_value_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"x.revision = 'main': hub dataset 'a/b' needs a pinned commit, allowed: 40"):
        check_source("x", {"hf_id": "a/b", "revision": "main"})
    with pytest.raises(ValueError, match=r"x.revision = None"):
        check_source("x", {"hf_id": "a/b"})
    with pytest.raises(ValueError, match=r"x.path = 'a.csv': allowed: a local file ending in .jsonl, .json, .parquet"):
        check_source("x", {"path": "a.csv"})
    with pytest.raises(ValueError, match="exactly one of 'path'"):
        check_source("x", {"path": "a.jsonl", "hf_id": "a/b", "revision": REV})
    with pytest.raises(ValueError, match="unknown benchmark; allowed: aime24, aime25, hmmt25"):
        check_benchmarks("tasks.math.benchmarks", {"aime23": {"path": "a.jsonl"}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['rev'\]; allowed: path, hf_id, revision, split"):
        check_benchmarks("tasks.math.benchmarks", {"aime24": {"hf_id": "a/b", "rev": REV}})
    check_source("x", {"hf_id": "a/b", "revision": REV})


def test_missing_columns_and_files_are_named(tmp_path):
    bad = tmp_path / "aime.jsonl"
    bad.write_text('{"id": 1, "question": "1+1?", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"aime24: record 0 .* lacks field\(s\) \['problem'\]; has \['answer', 'id', 'question'\]"):
        load_benchmark("aime24", {"path": str(bad)})
    with pytest.raises(FileNotFoundError, match="nope.parquet not found"):
        load_benchmark("hmmt25", {"path": str(tmp_path / "nope.parquet")})


def test_pinned_hub_dataset_is_read_through_datasets_and_honours_offline_mode():
    with pytest.raises(ConnectionError, match="HuggingFaceH4/aime_2024"):  # HF_DATASETS_OFFLINE=1 in conftest
        load_benchmark("aime24", {"hf_id": BENCHMARKS.get("aime24").hf_id, "revision": REV})


def test_config_refuses_malformed_data_blocks_before_any_job():
    from opdpipe.config import ConfigError, load_yaml, validate

    base = load_yaml("configs/default.yaml")
    cases = [({"grader": "exact"}, r"tasks.math.grader: 'exact' is not one of \['math_exact', 'math_verify'"),
             ({"source": "deepmath", "hf_id": "zwhe99/DeepMath-103K", "revision": "main"},
              r"tasks.math.revision: 'main' does not match"),
             ({"source": "deepmath", "hf_id": "zwhe99/DeepMath-103K"}, r"tasks.math.revision = None"),
             ({"benchmarks": {"aime24": {"hf_id": "HuggingFaceH4/aime_2024"}}}, r"benchmarks.aime24.revision = None"),
             ({"benchmarks": {"aime2024": {"path": "a.jsonl"}}}, r"'aime2024' is not one of \['aime24'"),
             ({"path": "a.jsonl"}, "source = 'synthetic'")]
    for extra, message in cases:
        cfg = json.loads(json.dumps(base))
        cfg["tasks"]["math"].update(extra)
        with pytest.raises(ConfigError, match=message):
            validate(cfg)


def test_lm_eval_runs_a_benchmark_and_grades_with_math_verify(tmp_path):
    """A tiny model taught three responses to the HMMT fixture: '\\boxed{0.5}' (gold \\frac{1}{2}, right),
    '\\boxed{\\sqrt{8}}' (gold 2\\sqrt{2}, right) and '\\boxed{1}' (gold \\frac{5}{6}, wrong). Greedy lm-eval
    must therefore score exactly 2/3, which only equivalence grading inside lm-eval can produce."""
    import torch

    from opdpipe.models import build_model, save_checkpoint
    from opdpipe.sft import train_sft
    from opdpipe.tasks.benchmarks import evaluate
    from opdpipe.tasks.graders import math_verify_score
    from opdpipe.tokenizer import build_char_tokenizer

    torch.set_num_threads(1)
    manifest = prepare("hmmt25", {"path": str(FIXTURES / "hmmt25_sample.parquet")}, tmp_path / "hmmt25")
    assert manifest["count"] == 3
    rows = [json.loads(x) for x in (tmp_path / "hmmt25" / "test.jsonl").read_text().splitlines()]
    tok = build_char_tokenizer()
    model = build_model({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "intermediate_size": 128, "max_position_embeddings": 256}, tok, seed=0)
    taught = [r"\boxed{0.5}", r"\boxed{\sqrt{8}}", r"\boxed{1}"]
    stats = train_sft(model, tok, [(r["prompt"], t) for r, t in zip(rows, taught)], steps=150, batch_size=3,
                      lr=3e-3, seed=0, log_every=0)
    assert stats["loss_last"] < 0.05, stats
    save_checkpoint(model, tok, tmp_path / "ckpt")
    out = evaluate(tmp_path / "ckpt", "hmmt25", tmp_path / "hmmt25" / "test.jsonl", tmp_path / "eval.json",
                   k=2, max_gen_toks=24, batch_size=3, seed=0)
    assert [s["greedy"] for s in out["samples"]] == taught  # no newline stop cut them, EOS ended them
    assert out["greedy_acc"] == pytest.approx(2 / 3) and out["lm_eval_tasks"] == ["opd_hmmt25_greedy", "opd_hmmt25_avg2"]
    for s in out["samples"]:  # lm-eval's per-sample scores are math-verify's
        assert s["greedy_correct"] == math_verify_score(s["greedy"], s["answer"])
        assert s["avg_at_k"] == sum(math_verify_score(x, s["answer"]) for x in s["samples"]) / 2
    assert "until: []" in (tmp_path / "lmeval_tasks" / "opd_hmmt25_greedy.yaml").read_text()


def test_lm_eval_skips_only_its_environment_report_and_reads_the_fields_as_they_are(tmp_path):
    """Inside no_environment_report, lm-eval's results get a note instead of torch's environment report
    (collected by subprocesses, about 1 s a call); outside it, torch's own function is back. The task
    files read the prompt and answer fields directly, with no template in between."""
    from lm_eval.loggers.utils import add_env_info
    from torch.utils import collect_env

    from opdpipe.evaluate import no_environment_report, render_tasks

    real, results = collect_env.get_pretty_env_info, {}
    with no_environment_report():
        add_env_info(results)
    assert results["pretty_env_info"].startswith("not collected") and results["lm_eval_version"]
    assert collect_env.get_pretty_env_info is real
    render_tasks("math", tmp_path / "test.jsonl", 4, 16, tmp_path)
    for name in ("opd_math_greedy", "opd_math_sampled"):
        text = (tmp_path / f"{name}.yaml").read_text()
        assert "doc_to_text: prompt " in text and "doc_to_target: answer\n" in text and "{{" not in text


def test_cli_benchmark_refuses_a_moving_revision(tmp_path):
    from opdpipe.cli import main

    with pytest.raises(SystemExit, match=r"benchmark.aime24.revision = 'main': .* allowed: 40 lowercase hex digits"):
        main(["benchmark", str(tmp_path), "--name", "aime24", "--hf-id", "HuggingFaceH4/aime_2024",
              "--revision", "main", "--out", str(tmp_path / "eval.json")])
