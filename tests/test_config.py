"""Study configs: the schema, the registries and the error messages agree."""
import copy
from pathlib import Path

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
    (lambda c: c["opd"].update(val_k=0), r"at opd.val_k: 0 is less than the minimum of 1"),
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


@pytest.mark.parametrize("edit, match", [
    # names that become paths: one safe pattern, bounded length, never "." or ".."
    (lambda c: c.update(study=".."), r"at study: '\.\.' does not match"),
    (lambda c: c.update(study="."), r"at study: '\.' does not match"),
    (lambda c: c.update(study="x; touch PWNED; echo"), r"at study: 'x; touch PWNED; echo' does not match"),
    (lambda c: c.update(study="s" * 300), r"at study: 's{300}' does not match"),
    (lambda c: c["variants"][0].update(name=".."), r"at variants.0.name: '\.\.' does not match"),
    (lambda c: c["variants"][0].update(name="a..b"), r"variants.0.name = 'a\.\.b': a name used in paths"),
    (lambda c: c["variants"].append({"divergence": "alpha: 0.5", "design": "opd"}),
     r"variants.6.divergence: divergence 'alpha: 0.5': alpha must be written as a plain number with no spaces"),
    # accepted, then failed late: now refused before any job
    (lambda c: c["opd"].update(prompts_per_step=4.0), r"at opd.prompts_per_step: 4.0 is not of type 'integer'"),
    (lambda c: c["opd"].update(group_size=2.0), r"at opd.group_size: 2.0 is not of type 'integer'"),
    (lambda c: c["opd"].update(num_substeps=3), r"opd.num_substeps = 3 \(variants.0 \(forward_kl-opd\) on task "
                                                 r"math\): must divide the batch of .* = 64 rollouts"),
    (lambda c: c["tasks"]["math"].update(max_new_tokens=300), r"max_new_tokens = 300 .*the teacher model has only "
                                                               r"256 positions.*allowed: max_new_tokens < 256"),
    (lambda c: c.update(seeds=[0, 0]), r"at seeds: \[0, 0\] has non-unique elements"),
    (lambda c: c["variants"].append({"divergence": "alpha:0", "design": "opd"}),
     r"variants.6.divergence: divergence 'alpha:0' is the reverse-KL limit .*use divergence reverse_kl"),
    (lambda c: c["variants"].append({"divergence": "alpha:1", "design": "opd"}),
     r"variants.6.divergence: divergence 'alpha:1' is the forward-KL limit .*use divergence forward_kl"),
    (lambda c: c["variants"].append({"divergence": "alpha:1e-300", "design": "opd"}),
     r"alpha must be finite and at least 0.001 away from 0 and 1"),
    (lambda c: c["variants"].append({"divergence": "alpha:5", "design": "opd_plus"}),
     r"opd.log_u_clip = 20.0 \(variants.6 .*\) with divergence 'alpha:5'.*allowed: opd.log_u_clip <= 17.7"),
    (lambda c: c["opd"].update(log_u_clip=60.0) or c["variants"].append({"divergence": "pearson_chi2", "design": "opd"}),
     r"opd.log_u_clip = 60.0 \(variants.6 \(pearson_chi2-opd\) on task math\) with divergence 'pearson_chi2': "
     r"f\(u\) or its advantages overflow float32 .* allowed: opd.log_u_clip <= 44.3"),
    (lambda c: c["tasks"]["math"]["knobs"].update(max_operands=9),
     r"tasks.math.knobs: unknown knob\(s\) \['max_operands'\]; allowed: \['max_operand', 'max_steps', 'min_steps'\]"),
])
def test_inputs_that_used_to_fail_late_are_refused_before_any_job(default, edit, match):
    edit(default)
    with pytest.raises(ConfigError, match=match):
        validate(default)


@pytest.mark.parametrize("content, match", [
    ("study: x\ntasks: [\n", r"not valid YAML at line 3"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", r"cannot be read as text"),
    ("- just\n- a list\n", r"a study config is a mapping of keys, got list"),
    ("", r"a study config is a mapping of keys, got NoneType"),
])
def test_unreadable_config_files_are_named(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=f"config file {path}: {match}" if "YAML" in match or "mapping" in match
                       else match):
        load(path)


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        load(tmp_path)


def test_the_schema_ships_inside_the_package():
    import opdpipe
    from opdpipe import config

    assert config.SCHEMA_PATH.is_relative_to(Path(opdpipe.__file__).parent) and config.SCHEMA_PATH.exists()
    assert 'opdpipe = ["lmeval_tasks/**/*", "schemas/*.yaml"' in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "workflow" / "schemas" / "config.schema.yaml").resolve() == config.SCHEMA_PATH


def test_every_path_name_rule_holds_for_the_layout():
    from opdpipe.layout import Layout

    with pytest.raises(ValueError, match="study = '\\.\\.'"):
        Layout.for_study("..")
    assert Layout.for_study("default").run_file("math", "jsd-opd", 1, "final") == "results/default/math/jsd-opd/seed1/final"
