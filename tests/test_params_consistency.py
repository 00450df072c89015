"""One config idiom, one meaning per parameter name: notebooks, stage configs, profiles, the driver and the CLI agree."""
from __future__ import annotations

import ast
from dataclasses import fields

import papermill as pm
import pytest

from helpers.__main__ import main
from helpers.cluster.config import SlurmConfig
from helpers.config import RENAMED, SHARED, StageConfig, read_params_file
from helpers.layout import CONFIGS_DIR
from helpers.llm.endpoint import Endpoint
from helpers.llm.models import EMBEDDED_STUDENT, EMBEDDED_TEACHER
from helpers.params import ParameterError
from helpers.pipeline import NOTEBOOKS, STAGE_CONFIGS, notebook_path, run_pipeline, split_parameters
from helpers.sft.config import SFTStageConfig
from helpers.sweep import SweepSpec, run_sweep


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_declares_exactly_its_config_with_the_same_defaults(notebook):
    cls = STAGE_CONFIGS[notebook]
    declared = pm.inspect_notebook(str(notebook_path(notebook)))
    assert list(declared) == cls.parameter_names(), "same names, in the config's order"
    defaults = cls.defaults()
    for name, info in declared.items():
        assert ast.literal_eval(info["default"]) == defaults[name], f"{notebook}: {name} differs from {cls.__name__}"


@pytest.mark.parametrize("cls", STAGE_CONFIGS.values(), ids=STAGE_CONFIGS)
def test_every_field_has_help(cls):
    assert all(len(text) > 10 for text in cls.help().values()), [n for n, h in cls.help().items() if len(h) <= 10]


def test_a_name_means_one_thing_in_every_stage():
    seen: dict[str, tuple[str, object, str]] = {}
    for notebook, cls in STAGE_CONFIGS.items():
        helps, defaults = cls.help(), cls.defaults()
        for name in cls.parameter_names():
            if name in seen:
                first, default, help = seen[name]
                assert defaults[name] == default, f"{name}: default differs between {first} and {notebook}"
                assert helps[name] == help, f"{name}: help differs between {first} and {notebook}"
            else:
                seen[name] = (notebook, defaults[name], helps[name])
    assert not set(RENAMED) & set(seen), "a renamed parameter is still declared"
    shared_by_many = {n for n in seen if sum(n in c.parameter_names() for c in STAGE_CONFIGS.values()) > 1}
    assert shared_by_many <= {name.upper() for name in SHARED}, "names several stages take are declared once"


def test_shared_model_defaults_are_the_embedded_models():
    assert SHARED["teacher_model"][0] == SHARED["judge_model"][0] == EMBEDDED_TEACHER
    assert SHARED["base_model"][0] == EMBEDDED_STUDENT


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_renamed_parameters_fail_before_anything_runs_with_the_new_names(old, tmp_path, capsys):
    with pytest.raises(ParameterError) as err:
        split_parameters({old: 1}, NOTEBOOKS)
    assert err.value.name == old and "_" + old in err.value.fix  # e.g. EXTRACT_MAX_TOKENS / GENERATE_MAX_TOKENS
    with pytest.raises(ParameterError) as err:
        STAGE_CONFIGS["02_generate"].from_params({old: 1})
    assert err.value.name == old and "was renamed" in err.value.problem
    assert main(["run", "--run-dir", str(tmp_path / "r"), "-p", old, "1"]) == 2
    assert RENAMED[old].split(" ")[0] in capsys.readouterr().err
    calls = []
    with pytest.raises(ParameterError) as err:
        run_sweep(SweepSpec(base={old: 1}, grid={"SEED": [0, 1]}), tmp_path / "sweep",
                  runner=lambda *a, **k: calls.append(a))
    assert err.value.name == old and err.value.fix == f"use {RENAMED[old]}" and not calls


def test_driver_checks_every_selected_stage_before_the_first_runs(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ParameterError) as err:
        run_pipeline(run_dir, {"K_SKILLS": 0}, ["01_extract_skills", "02_generate"], progress=False)
    assert err.value.name == "K_SKILLS"
    with pytest.raises(ParameterError) as err:
        run_pipeline(run_dir, {"N_EVAL": -1}, NOTEBOOKS, progress=False)
    assert err.value.name == "N_EVAL"
    assert not (run_dir / "notebooks").exists(), "no notebook may have run"


def test_driver_checks_inputs_only_of_stages_whose_predecessor_is_not_run(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ParameterError) as err:  # stage 2 alone on an empty folder: stage 1's lists are missing
        run_pipeline(run_dir, {}, ["02_generate"], progress=False)
    assert err.value.name == "SKILLS_PATH"
    with pytest.raises(ParameterError) as err:  # stage 4 alone: no checkpoint chosen by stage 3
        run_pipeline(run_dir, {"N_EVAL": 2}, ["01_extract_skills", "04_eval_ablations"], progress=False)
    assert err.value.name == "RUN_DIR"
    assert not (run_dir / "notebooks").exists()


def test_params_table_lists_every_parameter_once(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "stages", "default", "help"]
    names = [line.split()[0] for line in lines[1:] if line and not line.startswith(" ")]
    expected = {n for cls in STAGE_CONFIGS.values() for n in cls.parameter_names()}
    expected |= set(SlurmConfig.parameter_names())  # the Slurm executor's rows, listed after the stages'
    assert sorted(names) == sorted(expected)
    row = next(line for line in lines if line.startswith("MAX_CONCURRENCY "))
    assert "01,02,03,04" in row and " 8 " in row


def test_sft_recipe_lives_only_in_the_profiles():
    recipe = [f.name.upper() for f in fields(SFTStageConfig) if f.default is None and f.name not in SHARED]
    assert len(recipe) > 20
    for profile in SFTStageConfig.profiles():
        values = read_params_file(CONFIGS_DIR / "sft" / f"{profile}.yaml")
        assert set(recipe) <= set(values), f"{profile}.yaml leaves {set(recipe) - set(values)} unset"
        cfg = SFTStageConfig(profile=profile).validate()
        assert all(getattr(cfg, name.lower()) == values[name] for name in recipe)
    assert set(SFTStageConfig.profiles()) >= {"demo", "paper"}


def test_explicit_value_beats_the_profile_and_a_missing_profile_value_is_named(tmp_path):
    cfg = SFTStageConfig.from_params({"PROFILE": "paper", "LEARNING_RATE": 1e-4, "MAX_STEPS": None}, inputs=False)
    assert cfg.learning_rate == 1e-4 and cfg.max_steps == -1 and cfg.num_epochs == 15.0
    with pytest.raises(ParameterError) as err:
        SFTStageConfig.from_params({"PROFILE": "nope"})
    assert err.value.name == "PROFILE"


def test_paper_run_config_is_valid_for_every_stage(tmp_path, monkeypatch):
    """Offline, the owners' files come from a cache filled from the reference copies (as a first download would)."""
    from official_clone import seed_official_cache

    monkeypatch.setenv("ISM_CACHE_DIR", str(seed_official_cache(tmp_path)))
    params = read_params_file(CONFIGS_DIR / "paper.yaml")
    for notebook, routed in split_parameters(params, NOTEBOOKS).items():
        cfg = STAGE_CONFIGS[notebook].from_params({**routed, "RUN_DIR": "runs/paper"}, inputs=False)
        assert isinstance(cfg, StageConfig)


def test_configs_name_their_endpoints():
    cfg = STAGE_CONFIGS["02_generate"](teacher_model="m", teacher_base_url="http://x/v1", teacher_api_key_env="K")
    assert cfg.teacher() == Endpoint("TEACHER", "m", "http://x/v1", "K")
    assert SFTStageConfig(judge_model="j").judge().model == "j"
    with pytest.raises(ParameterError) as err:
        STAGE_CONFIGS["01_extract_skills"].from_params({"TEACHER_API_KEY_ENV": "sk-abcdefabcdefabcdef"})
    assert err.value.name == "TEACHER_API_KEY_ENV"


def test_command_line_and_yaml_values_keep_their_types(tmp_path):
    from helpers.__main__ import load_params

    config = tmp_path / "run.yaml"
    config.write_text("LEARNING_RATE: 1e-5\nSHIRKER_KIND: junk\n")
    params = load_params(str(config), [["NUM_EXAMPLES", "8"], ["TEACHER_BASE_URL", "''"], ["MAX_STEPS", "null"]])
    assert params == {"LEARNING_RATE": 1e-5, "SHIRKER_KIND": "junk", "NUM_EXAMPLES": 8, "TEACHER_BASE_URL": "",
                      "MAX_STEPS": None}
    assert SFTStageConfig.load(None, ["LEARNING_RATE=2e-4", "MAX_STEPS=null"]).max_steps == 6  # None: the profile's


@pytest.mark.parametrize("config", ["skills", "generate", "sft", "evaluate"])
def test_shared_checks_run_in_every_stage(config):
    """REQUEST_TIMEOUT / REQUEST_ATTEMPTS / LOCAL_DTYPE are checked once, in the config base, for every stage."""
    import importlib

    module = importlib.import_module(f"helpers.{config}.config")
    cls = next(c for c in vars(module).values() if isinstance(c, type) and issubclass(c, StageConfig)
               and c is not StageConfig)
    for bad, name in (({"LOCAL_DTYPE": "int8"}, "LOCAL_DTYPE"), ({"REQUEST_TIMEOUT": 0}, "REQUEST_TIMEOUT")):
        with pytest.raises(ParameterError, match=name):
            cls.from_params(bad, inputs=False)
