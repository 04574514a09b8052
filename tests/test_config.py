"""Study configs: the schema, the registries and the error messages agree."""
import copy

import pytest
import yaml

from opdpipe.advantages import ADVANTAGES
from opdpipe.config import ConfigError, load, opd_hparams, schema, teacher_config, validate
from opdpipe.losses import AGGREGATIONS
from opdpipe.trainer import DEFAULTS

from test_packaging import ROOT


@pytest.fixture
def default():
    return yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())


@pytest.mark.parametrize("name", ["default", "smoke", "paper"])
def test_shipped_configs_are_valid(name):
    cfg = load(ROOT / "configs" / f"{name}.yaml")
    assert cfg["eval"]["k"] >= 1 and cfg["seeds"]


def test_schema_names_come_from_the_registries():
    s = schema()
    assert s["properties"]["variants"]["items"]["properties"]["design"]["enum"] == ADVANTAGES.names()
    opd = s["$defs"]["opd"]["properties"]
    assert set(opd) == set(DEFAULTS)
    assert opd["loss_agg"]["enum"] == list(AGGREGATIONS)


def test_default_study_is_the_papers_grid(default):
    cfg = validate(default)
    grid = {(v["divergence"], v["design"]) for v in cfg["variants"]}
    assert grid == {(d, a) for d in ("forward_kl", "jsd", "reverse_kl") for a in ("opd", "opd_plus")}
    assert len(cfg["seeds"]) == 3 and set(cfg["tasks"]) == {"math", "tooluse"}


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(lerning_rate=1), r"at <top level>: Additional properties are not allowed \('lerning_rate'"),
    (lambda c: c["variants"].append({"divergence": "kl", "design": "opd"}),
     r"variants.6.divergence: unknown 'kl'; allowed: .*forward_kl"),
    (lambda c: c["variants"].append({"divergence": "jsd", "design": "ppo"}), r"variants.6.design: 'ppo' is not one of"),
    (lambda c: c["opd"].update(lr=-1.0), r"at opd.lr: -1.0 is less than or equal to the minimum of 0"),
    (lambda c: c["opd"].update(temperature=0.7), r"at opd.temperature: 1.0 was expected"),
    (lambda c: c["opd"].update(top_k=50), r"at opd.top_k: 50 is not of type 'null'"),
    (lambda c: c["tasks"].update(chess=copy.deepcopy(c["tasks"]["math"])), r"at tasks.chess: unknown task"),
    (lambda c: c["tasks"]["tooluse"]["sizes"].update(train=10 ** 6), r"tasks.tooluse.sizes: .* guarantees only"),
    (lambda c: c["variants"].append({"divergence": "jsd", "design": "opd"}), r"used twice"),
    (lambda c: c.update(seeds=[]), r"at seeds: \[\] should be non-empty"),
    (lambda c: c["tasks"]["math"].update(teacher_train={"stpes": 5}),
     r"at tasks.math.teacher_train: Additional properties are not allowed \('stpes'"),
    (lambda c: c.update(teacher={"hf_id": "Qwen/Qwen3-8B", "revision": "0" * 40}) or c["student"].pop("model") and
     c["student"].update(hf_id="Qwen/Qwen3-8B-Base", revision="1" * 40) or
     c["tasks"]["math"].update(teacher_train={"steps": 5}), r"at tasks.math.teacher_train: the teacher is not trained"),
    (lambda c: c.update(teacher={"hf_id": "Qwen/Qwen3-8B", "revision": "main"}),
     r"at teacher.revision: 'main' does not match"),
])
def test_bad_configs_name_the_key_the_value_and_the_choices(default, edit, match):
    edit(default)
    with pytest.raises(ConfigError, match=match):
        validate(default)


def test_extra_variants_by_config_alone(default):
    default["variants"] += [{"divergence": "reverse_kl", "design": "opd_plus", "name": "reverse_kl-opd_plus-g1",
                             "opd": {"gamma": 1.0}},
                            {"divergence": "alpha:0.5", "design": "opd_plus"},
                            {"divergence": "hellinger", "design": "opd_plus"}]
    cfg = validate(default)
    hp = opd_hparams(cfg, "math", "reverse_kl-opd_plus-g1")
    assert hp["gamma"] == 1.0 and hp["steps"] == 100 and hp["lr"] == 1e-4  # variant > task > study
    assert "alpha:0.5-opd_plus" in {v.get("name") or f"{v['divergence']}-{v['design']}" for v in cfg["variants"]}


def test_teacher_steps_per_task(default):
    default["tasks"]["math"]["teacher_train"] = {"steps": 123}
    cfg = validate(default)
    math, other = teacher_config(cfg, "math"), teacher_config(cfg, "tooluse")
    assert math["train"]["steps"] == 123 and math["train"]["lr"] == cfg["teacher"]["train"]["lr"]
    assert other["train"] == {**cfg["teacher"]["train"], **cfg["tasks"]["tooluse"].get("teacher_train", {})}
    assert cfg["teacher"]["train"]["steps"] != 123  # the study's block is left as written


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load("configs/nope.yaml")
