"""Study configs: JSON-schema validation (with defaults), registry checks, variant resolution.

Everything that can be wrong with a config fails here, before any job starts, with a message
that names the key, the value and what is allowed.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

import jsonschema
import yaml

from opdpipe import custom_divergences, resources, self_distill
from opdpipe.advantages import ADVANTAGES
from opdpipe.backends.study import check_study, is_pretrained_study
from opdpipe.data import check_spec
from opdpipe.divergences import DIVERGENCES, check_clip, get_divergence
from opdpipe.hparams import DEFAULTS
from opdpipe.layout import REFERENCES, STUDY_PATTERN, check_name
from opdpipe.tasks import TASKS, get_task

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"  # ships with the package
DEFAULT_CONFIG = "configs/default.yaml"


class ConfigError(ValueError):
    pass


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        for name, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub and name not in instance:
                instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    # a YAML 4.0 is a float, not an integer (JSON Schema would accept it and the trainer would crash)
    strict_int = cls.TYPE_CHECKER.redefine(
        "integer", lambda checker, x: isinstance(x, int) and not isinstance(x, bool))
    return jsonschema.validators.extend(cls, {"properties": set_defaults}, type_checker=strict_int)


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(config: dict) -> dict:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError otherwise."""
    if not isinstance(config, dict):
        raise ConfigError(f"config error at <top level>: a study config is a mapping of keys, got "
                          f"{type(config).__name__} {str(config)[:60]!r}")
    cfg = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigError(f"config error at {_where(e.absolute_path)}: {e.message}")
    try:
        check_name("study", cfg["study"], STUDY_PATTERN)
        _check_tasks(cfg)
        if self_distill.enabled(cfg):
            self_distill.check(cfg)  # the self-distillation group: its source task, its own student
        _check_models(cfg)
        _check_variants(cfg)
    except ValueError as err:
        raise ConfigError(f"config error at {err}") from None
    return _sorted(cfg)


def _check_tasks(cfg: dict) -> None:
    for task, spec in cfg["tasks"].items():
        if task not in TASKS:
            raise ValueError(f"tasks.{task}: unknown task; allowed: {', '.join(TASKS.names())}")
        knobs = set(spec.get("knobs", {})) - _knob_names(task)
        if knobs:
            raise ValueError(f"tasks.{task}.knobs: unknown knob(s) {sorted(knobs)}; allowed: "
                             f"{sorted(_knob_names(task))}")
        check_spec(task, spec)  # sizes, data source, grader, benchmarks
        if "teacher_train" in spec and "train" not in cfg["teacher"]:
            raise ValueError(f"tasks.{task}.teacher_train: the teacher is not trained here "
                             "(it has no 'train' block); remove the override")


def _knob_names(task: str) -> set[str]:
    params = inspect.signature(get_task(task).generate).parameters
    return {n for n in params if n not in ("n", "seed", "exclude")}


def _check_models(cfg: dict) -> None:
    check_study(cfg)  # model sources, devices, adapter, chat, vocabularies (opdpipe.backends.study)
    if "model" in cfg["teacher"] and "train" not in cfg["teacher"]:
        raise ValueError("teacher: a model built here needs a 'train' block")


def _positions(cfg: dict, task: str) -> dict[str, int]:
    """Positions of the models a task's runs use (the self-distillation group: its student, twice)."""
    if task == self_distill.GROUP:
        student = self_distill.student_block(cfg, task)
        return {"student": student["model"]["max_position_embeddings"]} if "model" in student else {}
    return {role: cfg[role]["model"]["max_position_embeddings"] for role in ("teacher", "student")
            if "model" in cfg[role]}


def _check_variants(cfg: dict) -> None:
    seen = set()
    for i, v in enumerate(cfg["variants"]):
        try:
            div = get_divergence(v["divergence"])
        except KeyError:
            raise ValueError(f"variants.{i}.divergence: unknown {v['divergence']!r}; "
                             f"allowed: {', '.join(DIVERGENCES.names())}") from None
        except ValueError as err:  # a family member with a bad parameter: say why
            raise ValueError(f"variants.{i}.divergence: {err}") from None
        if v["divergence"].startswith("custom:"):
            try:
                custom_divergences.check(div)
            except ValueError as err:
                raise ValueError(f"variants.{i}.divergence: {err}") from None
        if v["design"] not in ADVANTAGES:
            raise ValueError(f"variants.{i}.design: unknown {v['design']!r}; allowed: {', '.join(ADVANTAGES.names())}")
        vid = check_name(f"variants.{i}.name" if "name" in v else f"variants.{i} (id {variant_id(v)!r})",
                         variant_id(v))
        if vid in seen or vid in REFERENCES:
            raise ValueError(f"variants.{i}: variant id {vid!r} is used twice or reserved "
                             f"({', '.join(REFERENCES)}); give it a distinct 'name'")
        seen.add(vid)
        for task in self_distill.study_tasks(cfg):
            _check_hparams(cfg, task, vid, div, f"variants.{i} ({vid}) on task {task}")


def _check_hparams(cfg: dict, task: str, vid: str, div, where: str) -> None:
    """The trainer's own checks on the merged hyperparameters, before any job."""
    hp = {**DEFAULTS, **opd_hparams(cfg, task, vid)}
    batch = hp["prompts_per_step"] * hp["group_size"]
    if batch % hp["num_substeps"]:
        raise ValueError(f"opd.num_substeps = {hp['num_substeps']} ({where}): must divide the batch of "
                         f"prompts_per_step x group_size = {batch} rollouts")
    check_clip(div, hp["log_u_clip"], where=f" ({where})")
    world = resources.world_size(cfg, hp)
    resources.check_world(world, hp, where)  # data-parallel runs
    if world > 1 and is_pretrained_study(cfg):
        raise ValueError(f"opd.world_size / resources.train.gpus = {world} ({where}): data-parallel training is "
                         "wired for the embedded models only; a pretrained run uses one device (allowed: 1)")
    for role, n_pos in _positions(cfg, task).items():
        if hp["max_new_tokens"] >= n_pos:
            raise ValueError(f"max_new_tokens = {hp['max_new_tokens']} ({where}): the {role} model has only "
                             f"{n_pos} positions ({role}.model.max_position_embeddings) for prompt and response; "
                             f"allowed: max_new_tokens < {n_pos}")



def _sorted(obj):
    """Key-sorted copy: how a file orders its keys never changes a job's params (nor its re-runs)."""
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(x) for x in obj]
    return obj


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config; a missing, unreadable or malformed file is a ConfigError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file (a directory?); give a YAML file")
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"config file {path} cannot be read as text ({type(err).__name__}); give a YAML file") \
            from None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"config file {path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path}: a study config is a mapping of keys, got {type(cfg).__name__}")
    return cfg


def load(path: str | Path) -> dict:
    return validate(load_yaml(path))


def variant_id(v: dict) -> str:
    return v.get("name") or f"{v['divergence']}-{v['design']}"


def variants(cfg: dict) -> dict[str, dict]:
    return {variant_id(v): v for v in cfg["variants"]}


def teacher_config(cfg: dict, task: str) -> dict:
    """The teacher block for one task: teacher.train updated with the task's teacher_train overrides."""
    teacher = copy.deepcopy(cfg["teacher"])
    if cfg["tasks"][task].get("teacher_train"):
        teacher["train"] = {**teacher["train"], **cfg["tasks"][task]["teacher_train"]}
    return teacher


def opd_hparams(cfg: dict, task: str, vid: str) -> dict:
    """Trainer hyperparameters of one variant: study opd block, then the task's, then the variant's."""
    v, block = variants(cfg)[vid], self_distill.task_block(cfg, task)  # a task, or the self-distillation group
    hp = {"threads": cfg["threads"], "max_new_tokens": block["max_new_tokens"]}
    return {**hp, **cfg.get("opd", {}), **block.get("opd", {}), **v.get("opd", {})}
