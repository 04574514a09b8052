"""Task generators, answer scoring and the real-data adapters (on shipped fixture files)."""
from pathlib import Path

import pytest

from opdpipe.tasks import TASKS, get_task
from opdpipe.tasks.math import answers_equal, extract_answer
from opdpipe.tasks.real import load_deepmath, load_toolalpaca
from opdpipe.tasks.tooluse import calls_match, parse_call

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("task", ["math", "tooluse"])
def test_references_score_one_and_generation_is_deterministic(task):
    t = get_task(task)
    a, b = t.generate(50, 7), t.generate(50, 7)
    assert a == b
    assert len({e["prompt"] for e in a}) == 50
    assert all(t.score(e["target"], e["answer"]) == 1.0 for e in a)
    assert t.generate(50, 8) != a
    excluded = t.generate(50, 9, exclude={e["prompt"] for e in a})
    assert not {e["prompt"] for e in excluded} & {e["prompt"] for e in a}


def test_math_answer_extraction_and_equivalence():
    assert extract_answer("3+4=7. #### 7") == "7"
    assert extract_answer("so #### 1,024") == "1024"
    assert extract_answer(r"thus \boxed{\frac{1}{4}}") == r"\frac{1}{4}"
    assert extract_answer("no answer here") is None
    assert answers_equal("0.25", r"\frac{1}{4}") and answers_equal("07", "7") and not answers_equal("8", "7")
    m = get_task("math")
    assert m.score("1+2=3. #### 3", "3") == 1.0
    assert m.score("1+2=4. #### 4", "3") == 0.0
    assert m.score("1+2=3.", "3") == 0.0


def test_tool_call_matching_ignores_order_and_whitespace_only():
    gold = 'weather {"city":"oslo","unit":"c"}'
    assert calls_match('weather { "unit": "c", "city": "oslo" }', gold)
    assert not calls_match('forecast {"city":"oslo","unit":"c"}', gold)  # wrong name
    assert not calls_match('weather {"city":"oslo"}', gold)  # missing argument
    assert not calls_match('weather {"city":"oslo","unit":"c","x":1}', gold)  # extra argument
    assert not calls_match('weather {"city":"rome","unit":"c"}', gold)  # wrong value
    assert not calls_match('weather {"city":"oslo",', gold)  # malformed JSON
    assert parse_call("not a call") is None


def test_generators_refuse_impossible_sizes():
    with pytest.raises(ValueError, match="distinct"):
        get_task("tooluse").generate(get_task("tooluse").capacity(tools_per_prompt=1) + 1, 0, tools_per_prompt=1)
    with pytest.raises(ValueError, match="min_steps"):
        get_task("math").generate(5, 0, min_steps=3, max_steps=2)
    with pytest.raises(KeyError, match="unknown task 'chess'.*math, tooluse"):
        get_task("chess")
    assert TASKS.fixed_names() == ["math", "tooluse"]


def test_deepmath_adapter_on_fixture():
    rows = load_deepmath(str(FIXTURES / "deepmath_sample.jsonl"))
    assert len(rows) == 4
    m = get_task("math")
    assert all(m.score(r["target"], r["answer"]) == 1.0 for r in rows)
    assert rows[2]["answer"] == r"\frac{1}{4}"


def test_toolalpaca_adapter_on_fixture():
    rows = load_toolalpaca(str(FIXTURES / "toolalpaca_sample.json"))
    assert len(rows) == 2  # the instance without a tool call is skipped
    assert "getCurrentWeather; getForecast" in rows[0]["prompt"] and "components" not in rows[0]["prompt"]
    t = get_task("tooluse")
    assert t.score('getForecast {"city": "Rome", "days": 3}', rows[1]["answer"]) == 1.0
    assert t.score('getForecast {"city": "Rome", "days": 4}', rows[1]["answer"]) == 0.0


def test_adapter_names_missing_fields(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?"}\n')
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['final_answer'\]"):
        load_deepmath(str(bad))
