"""One name per concept across every verb (issue 17): the configs' fields, the deprecated CLI spellings, --json."""

from __future__ import annotations

import dataclasses

import pytest
import tyro

from deepcrl.bench.config import BenchServeConfig, BenchTeacherConfig
from deepcrl.cli import DEPRECATED, VERBS, _load, json_output, main, print_json, rename_deprecated

# Every spelling one concept has had (or could plausibly get) across the verbs; the first is the chosen one.
# A stage prefix (pipeline's teacher_/bench_) is part of the scope, not of the concept, and is stripped first.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "a run directory a verb reads": ("run", "ckpt", "teacher", "teacher_dir", "checkpoint", "run_dir"),
    "an exported model file": ("model", "onnx", "model_path", "onnx_path"),
    "a served model's name": ("model_name", "default_model", "name"),
    "the micro-batch size": ("max_batch_size", "max_batch"),
    "the micro-batch wait": ("max_queue_delay_us", "max_delay_us", "max_delay", "queue_delay_us"),
    "a wall-time cap": ("max_minutes", "minutes", "time_limit_s", "time_limit", "max_seconds", "max_time_s"),
    "a measurement's length": ("duration_s", "seconds", "duration"),
    "evaluation episodes": ("eval_episodes", "episodes", "num_episodes", "n_episodes"),
    "steps per env per collection": ("unroll_length", "rollout_length"),
    "the student's gradient steps": ("distill_steps", "student_steps", "gradient_steps"),
}
STAGE_PREFIXES = ("teacher_", "bench_")


def verb_configs() -> dict[str, type]:
    """Every config a verb parses: `bench`'s sub-configs in place of its wrapper."""
    configs = {verb: _load(target) for verb, (target, _) in VERBS.items()}
    configs.pop("bench")
    return {**configs, "bench teacher": BenchTeacherConfig, "bench serve": BenchServeConfig}


def concept_of(field: str) -> str | None:
    for prefix in STAGE_PREFIXES:
        if field.startswith(prefix) and field != prefix.rstrip("_"):
            field = field[len(prefix):]
            break
    return next((concept for concept, names in CONCEPTS.items() if field in names), None)


def spellings(configs: dict[str, type]) -> dict[str, dict[str, list[str]]]:
    """concept -> {spelling (prefix stripped) -> ["verb.field", ...]} over the configs' fields."""
    found: dict[str, dict[str, list[str]]] = {}
    for verb, cls in configs.items():
        for f in dataclasses.fields(cls):
            concept = concept_of(f.name)
            if concept is not None:
                bare = next((f.name[len(p):] for p in STAGE_PREFIXES if f.name.startswith(p)), f.name)
                found.setdefault(concept, {}).setdefault(bare, []).append(f"{verb}.{f.name}")
    return found


def test_every_concept_has_one_spelling_across_the_verbs():
    clashes = {concept: names for concept, names in spellings(verb_configs()).items() if len(names) > 1}
    assert not clashes, f"two spellings of one concept: {clashes}"


def test_the_spelling_used_is_the_chosen_one():
    for concept, names in spellings(verb_configs()).items():
        assert list(names) == [CONCEPTS[concept][0]], (concept, names)


def test_the_check_catches_an_old_spelling():
    """The walk fails on the old code's shape: serve spelling the batch size `max_batch` beside export's."""
    old_serve = dataclasses.make_dataclass("OldServe", [("model", str), ("max_batch", int), ("max_delay_us", int)])
    clashes = {c: n for c, n in spellings({**verb_configs(), "serve": old_serve}).items() if len(n) > 1}
    assert set(clashes) == {"the micro-batch size", "the micro-batch wait"}
    assert clashes["the micro-batch size"] == {"max_batch": ["serve.max_batch"],
                                                "max_batch_size": ["export.max_batch_size",
                                                                   "bench serve.max_batch_size"]}


def test_times_carry_their_unit():
    for verb, cls in verb_configs().items():
        for f in dataclasses.fields(cls):
            if any(word in f.name for word in ("second", "delay", "timeout", "time_limit", "budget", "duration")):
                assert f.name.endswith(("_s", "_us")), f"{verb}.{f.name} should end in _s or _us"


@pytest.mark.parametrize("verb", sorted(set(verb_configs()) - {"serve"}))
def test_every_verb_that_prints_a_result_takes_json(verb):
    assert "json" in {f.name for f in dataclasses.fields(verb_configs()[verb])}


# ---- the old CLI spellings ---------------------------------------------------------------------------------

# verb -> the other flags a valid command line of that verb needs
BASE = {
    "eval": [],
    "export": ["--out", "p.onnx"],
    "distill": ["--out", "s"],
    "serve": ["--model", "p.onnx"],
    "bench serve": ["--model", "p.onnx"],
    "pipeline": [],
}
# (verb, old flag) -> (value given, what the field holds after parsing), where the value is not kept as typed
VALUES = {("eval", "--ckpt"): "runs/t", ("export", "--ckpt"): "runs/t", ("distill", "--teacher"): "runs/t",
          ("export", "--name"): "policy", ("serve", "--default-model"): "policy"}
CONVERTED = {("bench serve", "--time-limit-s"): ("120", 2.0)}
ALIASES = [(verb, old, new) for verb, table in DEPRECATED.items() for old, (new, _) in table.items()]


def _parse(verb: str, args: list[str]):
    words = verb.split()
    configs = verb_configs()
    if len(words) == 2:  # `bench serve`: the wrapper with its subcommand, as `deepcrl` parses it
        return tyro.cli(_load(VERBS["bench"][0]), args=[words[1], *args]).what
    return tyro.cli(configs[verb], args=args)


@pytest.mark.parametrize("verb, old, new", ALIASES, ids=[f"{v}{o}" for v, o, _ in ALIASES])
@pytest.mark.parametrize("form", ["space", "equals"])
def test_old_flag_maps_to_the_new_one_with_one_warning(verb, old, new, form):
    given, expected = CONVERTED.get((verb, old), (VALUES.get((verb, old), "7"), None))
    base = list(BASE[verb])
    field = new.removeprefix("--").replace("-", "_")
    needs = {"eval": "--run", "export": "--run", "distill": "--run"}.get(verb)
    if needs and new != needs:
        base += [needs, "runs/t"]
    old_args = [old, given] if form == "space" else [f"{old}={given}"]
    warnings: list[str] = []
    argv = rename_deprecated([*verb.split(), *old_args, *base], warnings.append)
    assert warnings == [f"warning: {old} is deprecated; use {new}"]
    flags = [a.partition("=")[0] for a in argv if a.startswith("--")]
    assert old not in flags and new in flags
    old_cfg = _parse(verb, argv[len(verb.split()):])
    new_cfg = _parse(verb, [new, given, *base])
    value = getattr(old_cfg, field)
    assert value == (expected if expected is not None else getattr(new_cfg, field))
    assert old_cfg == (dataclasses.replace(new_cfg, **{field: expected}) if expected is not None else new_cfg)


def test_new_flags_pass_through_untouched_and_silently():
    warnings: list[str] = []
    argv = ["serve", "--model", "p.onnx", "--max-batch-size", "8", "--max-queue-delay-us", "50",
            "--model-name", "p"]
    assert rename_deprecated(argv, warnings.append) == argv and warnings == []
    cfg = _parse("serve", argv[1:])
    assert (cfg.max_batch_size, cfg.max_queue_delay_us, cfg.model_name) == (8, 50, "p")
    # an old flag of one verb is not touched in another (train's --steps is its own)
    assert rename_deprecated(["train", "--steps", "10"], warnings.append) == ["train", "--steps", "10"]
    assert warnings == []


def test_main_prints_the_warning_on_stderr(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--max-batch", "8", "--help"])
    assert exit_.value.code == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["warning: --max-batch is deprecated; use --max-batch-size"]
    assert "--max-batch-size" in captured.out


def test_json_output_keeps_stdout_for_the_result(capsys):
    from pathlib import Path

    from deepcrl.cli.progress import Display

    with json_output(True):
        print("progress line")
        with Display("distill", total=2, min_interval_s=0.0) as display:
            display.update(2, loss=0.5)
    print_json({"out": Path("runs/s"), "success": 0.5})
    captured = capsys.readouterr()
    assert captured.out == '{"out": "runs/s", "success": 0.5}\n'
    assert "progress line" in captured.err and "distill 2/2 steps" in captured.err


# ---- config checks: one style (`__post_init__`, one sentence naming the flag) ------------------------------

BAD = [("eval", {"run": "r", "eval_episodes": 0}, "--eval-episodes must be at least 1, got 0."),
       ("train", {"sgd_steps": 0}, "--sgd-steps must be positive, got 0."),
       ("distill", {"run": "t", "out": "s", "beta_decay": 2.0}, "--beta-decay must lie in [0, 1], got 2.0."),
       ("export", {"run": "r", "out": "p.onnx", "max_batch_size": 0}, "--max-batch-size must be at least 1, got 0."),
       ("serve", {"model": "p.onnx", "max_queue_delay_us": -1}, "--max-queue-delay-us must be at least 0, got -1."),
       ("bench serve", {"max_minutes": 0}, "--max-minutes must be positive, got 0."),
       ("bench teacher", {"max_reps": 1}, "--max-reps must be at least 2, got 1."),
       ("pipeline", {"bench_duration_s": -1.0}, "--bench-duration-s must be at least 0, got -1.0."),
       ("sweep", {"jobs": 0}, "--jobs must be at least 1, got 0.")]


@pytest.mark.parametrize("verb, fields, message", BAD, ids=[b[0] for b in BAD])
def test_a_config_checks_itself_when_built(verb, fields, message):
    from deepcrl.errors import DeepcrlError

    with pytest.raises(DeepcrlError) as info:
        verb_configs()[verb](**fields)
    assert str(info.value) == message


def test_every_config_with_settings_checks_itself():
    for verb, cls in verb_configs().items():
        if {f.name for f in dataclasses.fields(cls)} != {"json"}:  # `envs` has nothing to check
            assert "__post_init__" in vars(cls), f"{verb}'s config does not check itself"
