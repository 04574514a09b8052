"""Graders on answers in the real formats: boxed LaTeX, GSM8K '####', ToolAlpaca calls; right and wrong."""
import json
from pathlib import Path

import pytest

from opdpipe.tasks import get_task
from opdpipe.tasks.graders import (GRADER_TASK, GRADERS, check_grader, final_answer, get_grader, score_record,
                                   scorer_for)
from opdpipe.tasks.real import load_deepmath, load_toolalpaca

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("response, answer, expected", [
    (r"Half of it, so \boxed{\frac{1}{2}}.", "0.5", 1.0),  # fraction vs decimal
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\dfrac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", 1.0),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),  # equivalent forms
    (r"\boxed{(x+1)^2}", r"x^2+2x+1", 1.0),
    (r"\boxed{31}", "031", 1.0),  # AIME's zero-padded answers
    (r"first \boxed{3}, on reflection \boxed{4}", "4", 1.0),  # the last box counts
    ("7+5=12. 12-3=9. #### 9", "9", 1.0),  # GSM8K style
    ("so #### 1,024", "1024", 1.0),
    (r"\boxed{3}", "4", 0.0),  # wrong value
    (r"\boxed{\frac{1}{3}}", "0.5", 0.0),
    ("The answer is 3.", "3", 0.0),  # unboxed: not a final answer
    (r"\boxed{}", "3", 0.0),
    (r"\boxed{\frac{1}{2}", "0.5", 0.0),  # unbalanced
    ("}}{{ garbage \\boxed{{{", "3", 0.0),
    ("", "3", 0.0),
])
def test_math_verify_grades_real_format_answers(response, answer, expected):
    assert get_grader("math_verify")(response, answer) == expected


def test_final_answer_takes_the_last_marker():
    assert final_answer(r"#### 5 then \boxed{6}") == "6"
    assert final_answer(r"\boxed{6} then #### 5") == "5"
    assert final_answer(r"\boxed{\frac{a}{b^{2}}}") == r"\frac{a}{b^{2}}"
    assert final_answer("no answer") is None


def test_embedded_scorer_is_kept_because_math_verify_would_differ():
    """The embedded default keeps math_exact: on run-on outputs the two disagree, so switching would move
    its numbers. Records without a grader are scored exactly as before."""
    exact, mv = get_grader("math_exact"), get_grader("math_verify")
    assert exact("7+2=9. #### 9 pens", "9") == 1.0 and mv("7+2=9. #### 9 pens", "9") == 0.0
    rec = {"task": "math", "answer": "9"}
    assert scorer_for("math", [rec]) is get_task("math").score
    assert score_record(rec, "7+2=9. #### 9 pens") == 1.0
    assert score_record({**rec, "grader": "math_verify"}, "7+2=9. #### 9 pens") == 0.0


def test_deepmath_targets_score_right_and_wrong_answers_wrong():
    rows = load_deepmath(str(FIXTURES / "deepmath_sample.jsonl"))
    mv = get_grader("math_verify")
    assert all(mv(r["target"], r["answer"]) == 1.0 for r in rows)
    assert rows[2]["answer"] == r"\frac{1}{4}" and mv(r"\boxed{0.25}", rows[2]["answer"]) == 1.0
    assert mv(r"\boxed{0.2}", rows[2]["answer"]) == 0.0
    assert all(r"\boxed{}" in r["prompt"] for r in rows)  # the prompt asks for the graded form


def test_tool_call_grader_on_toolalpaca_records():
    rows = load_toolalpaca(str(FIXTURES / "toolalpaca_sample.json"))
    g, gold = get_grader("tool_call"), rows[1]["answer"]  # getForecast {"city":"Rome","days":3}
    assert g('getForecast {"days": 3, "city": "Rome"}', gold) == 1.0  # order-insensitive
    assert g('getForecast {"city": " Rome ", "days": "3"}', gold) == 1.0  # type-tolerant: "3" = 3
    assert g('getForecast {"city": "Rome", "days": 3.0}', gold) == 1.0
    assert g('Thought: forecast.\nAction: getForecast\nAction Input: {"city": "Rome", "days": 3}', gold) == 1.0
    assert g('getForecast {"city": "Rome", "days": 4}', gold) == 0.0  # wrong value
    assert g('getForecast {"city": "rome", "days": 3}', gold) == 0.0  # values are case-sensitive
    assert g('getCurrentWeather {"city": "Rome", "days": 3}', gold) == 0.0  # wrong tool
    assert g('getForecast {"city": "Rome"}', gold) == 0.0  # missing argument
    assert g('getForecast {"city": "Rome", "days": 3, "units": "metric"}', gold) == 0.0  # extra argument
    assert g('getForecast {"city": "Rome", "days": ', gold) == 0.0  # malformed JSON
    assert g("I cannot help with that.", gold) == 0.0
    assert g('getForecast ["Rome", 3]', gold) == 0.0  # arguments must be an object
    assert g('x {"flag": "true"}', 'x {"flag": true}') == 1.0 and g('x {"flag": 1}', 'x {"flag": true}') == 0.0


def test_grader_registry_and_schema_agree_and_errors_list_names():
    from opdpipe.config import schema

    task_props = schema()["properties"]["tasks"]["additionalProperties"]["properties"]
    assert sorted(task_props["grader"]["enum"]) == GRADERS.fixed_names() == sorted(GRADER_TASK)
    with pytest.raises(KeyError, match="unknown grader 'exact'; known: math_exact, math_verify, tool_call, tool_exact"):
        get_grader("exact")
    with pytest.raises(ValueError, match=r"tasks.math.grader = 'tool_call' grades tooluse answers; allowed for "
                                         r"task math: math_exact, math_verify"):
        check_grader("tasks.math.grader", "math", "tool_call")
    with pytest.raises(ValueError, match="several graders"):
        scorer_for("math", [{"grader": "math_exact"}, {"grader": "math_verify"}])
    with pytest.raises(ValueError, match="some name none"):
        scorer_for("math", [{"grader": "math_verify"}, {}])


def test_real_sources_stamp_their_grader_and_synthetic_files_stay_unchanged(tmp_path):
    from opdpipe import data

    spec = {"source": "toolalpaca", "path": str(FIXTURES / "toolalpaca_sample.json"),
            "sizes": {"train": 1, "validation": 1, "test": 1}}
    data.run("tooluse", spec, 0, tmp_path / "ta")
    rows = [json.loads(x) for s in ("train", "test") for x in (tmp_path / "ta" / f"{s}.jsonl").read_text().splitlines()]
    assert {r["grader"] for r in rows} == {"tool_call"}
    synth = {"knobs": {"min_steps": 1, "max_steps": 1, "max_operand": 5}, "sizes": {"train": 5, "validation": 2, "test": 2}}
    data.run("math", synth, 0, tmp_path / "m")
    assert "grader" not in (tmp_path / "m" / "test.jsonl").read_text()
    data.run("math", {**synth, "grader": "math_verify"}, 0, tmp_path / "mv")
    assert all(json.loads(x)["grader"] == "math_verify" for x in (tmp_path / "mv" / "test.jsonl").read_text().splitlines())
    (tmp_path / "mv" / "test.jsonl").write_text("damaged\n")  # regenerated, grader and all, to its manifest sha
    assert {r["grader"] for r in data.load_split(tmp_path / "mv", "test", log=lambda m: None)} == {"math_verify"}


def test_math_verify_agrees_with_the_embedded_scorer_on_default_style_responses():
    """What the README states: on the default study's math test split, each reference, every truncation
    of it, a response with one wrong step and a few run-ons are judged alike by both graders."""
    import random

    import yaml

    from opdpipe.data import make_splits

    spec = yaml.safe_load((Path(__file__).parents[1] / "configs" / "default.yaml").read_text())["tasks"]["math"]
    test = make_splits("math", {**spec, "sizes": {**spec["sizes"], "train": 1}}, 0)["test"]
    task, rng, responses = get_task("math"), random.Random(0), []
    for e in test:
        t = e["target"]
        responses += [(t[:cut], e["answer"]) for cut in range(1, len(t) + 1)]
        responses += [(x, e["answer"]) for x in (t + "\nAnn has 3 pens", t.replace("#### ", "####"), t + "0")]
        if segments := task.with_error(e, rng):
            responses.append(("".join(text for text, _ in segments), e["answer"]))
    exact, mv = get_grader("math_exact"), get_grader("math_verify")
    differ = [(r, a) for r, a in responses if exact(r, a) != mv(r, a)]
    assert len(responses) > 3000 and not differ, differ[:5]
    assert 0 < sum(exact(r, a) for r, a in responses) < len(responses)  # both outcomes occur


def test_opd_trains_on_toolalpaca_records_graded_by_tool_call(tiny_world, tmp_path):
    """ToolAlpaca records (the real format) go through the adapter and the data stage into an OPD run
    whose rollout and validation accuracy use the records' tool_call grader."""
    from opdpipe import data
    from opdpipe.tasks.graders import tool_call_score
    from opdpipe.trainer import RunSpec, run

    api = json.loads((FIXTURES / "toolalpaca_sample.json").read_text())[0]
    cities = ["Oslo", "Rome", "Lima", "Bern", "Riga", "Doha", "Faro", "Graz", "Pune", "Nice", "Cork", "Bonn"]
    api["Instances"] = [{"input": f"Forecast for {c} for {d} days?", "output": "ok", "Final Thought": "done",
                         "intermediate_steps": [[["getForecast", json.dumps({"city": c, "days": d}), "t"], "{}"]]}
                        for c in cities for d in (2, 3)]
    (tmp_path / "train_data.json").write_text(json.dumps([api]))
    spec = {"source": "toolalpaca", "path": str(tmp_path / "train_data.json"),
            "sizes": {"train": 16, "validation": 4, "test": 4}}
    data.run("tooluse", spec, 0, tmp_path / "data")
    train = data.read_jsonl(tmp_path / "data" / "train.jsonl")
    assert len(train) == 16 and scorer_for("tooluse", train) is tool_call_score
    hp = {"steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8, "eval_every": 1, "eval_size": 4,
          "bias_every": 0, "checkpoint_every": 0}
    out = tmp_path / "run"
    run(RunSpec("tooluse", "reverse_kl", "opd_plus", 0, str(tiny_world / "student"), str(tiny_world / "teacher"),
                str(tmp_path / "data"), str(out), hp), progress=False)
    rows = data.read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2] and "rollout/acc" in rows[1] and "val/greedy_acc" in rows[2]
