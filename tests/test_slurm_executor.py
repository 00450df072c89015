"""The Slurm executor without a cluster: parameters, checks against a fake sinfo, rendered scripts, the job function's
resume and failure records, and the status table. The real jobs are tested in tests/test_slurm_cluster.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cluster import Partition, SlurmConfig, StageJob, check_resources, parse_time, query_partitions
from helpers.cluster import checks as checks_module
from helpers.cluster.jobs import read_stage_record, stage_done
from helpers.cluster.status import format_status
from helpers.cluster.submit import Plan, StageBatch, StageTask, render_plan, sbatch_parameters
from helpers.params import ParameterError
from helpers.slurm_driver import job_params, stage_gpus

STAGES = ("01_extract_skills", "02_generate", "03_sft", "04_eval_ablations")


@pytest.mark.parametrize("text, minutes", [("90", 90), ("5:30", 6), ("1:30:00", 90), ("2-12", 3600),
                                           ("1-02:30", 1590), ("1-00:00:30", 1441), ("UNLIMITED", None),
                                           ("infinite", None)])
def test_slurm_time_formats(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("bad", ["1:2:3:4", "ninety", "1-", "0", 5400, "-5"])
def test_unparsable_time_names_the_parameter(bad):
    with pytest.raises(ParameterError) as err:
        SlurmConfig.from_params({"SLURM_TIME": {"03": bad}})
    assert err.value.name == "SLURM_TIME"
    if bad == 5400:
        assert "quote" in err.value.fix


def test_per_stage_values_and_defaults():
    cfg = SlurmConfig.from_params({"SLURM_PARTITION": {"default": "cpu", 3: "gpu", "eval": "gpu"},
                                   "SLURM_TIME": {"03": "2-00:00:00"}, "SLURM_CPUS": 4})
    assert [cfg.for_stage("partition", s) for s in STAGES] == ["cpu", "cpu", "gpu", "gpu"]
    assert cfg.time_minutes("03_sft") == 2880 and cfg.time_minutes("01_extract_skills") == 120  # built-in default
    assert cfg.for_stage("cpus", "02_generate") == 4
    assert [cfg.gpus_for(s) for s in STAGES] == [0, 0, 1, 1]
    assert cfg.gpus_for("03_sft", num_processes=4) == 4
    with pytest.raises(ParameterError, match="names no stage"):
        SlurmConfig.from_params({"SLURM_GPUS": {"05": 1}})
    with pytest.raises(ParameterError, match="SLURM_PARTITON"):
        SlurmConfig.from_params({"SLURM_PARTITON": "gpu"})


def test_extra_flags_and_secrets():
    cfg = SlurmConfig.from_params({"SLURM_EXTRA": ["--constraint=h100", "--exclusive"]})
    assert cfg.extra_parameters("03_sft") == {"constraint": "h100", "exclusive": True}
    with pytest.raises(ParameterError, match="--array is set by the executor"):
        SlurmConfig.from_params({"SLURM_EXTRA": ["--array=0-3"]})
    with pytest.raises(ParameterError):
        SlurmConfig.from_params({"SLURM_EXTRA": ["-p gpu"]})
    cfg = SlurmConfig.from_params({"SLURM_SETUP": ["export OPENAI_API_KEY=sk-abc"]})
    batch = StageBatch("02_generate", "02_generate", [], 0)
    with pytest.raises(ParameterError, match="secret") as err:
        sbatch_parameters(cfg, batch, None)
    assert err.value.name == "SLURM_SETUP"


def test_nprocesses_must_fit_the_gpus():
    cfg = SlurmConfig.from_params({"SLURM_GPUS": {"03": 2}})
    with pytest.raises(ParameterError, match="NUM_PROCESSES"):
        stage_gpus(cfg, list(STAGES), {"NUM_PROCESSES": 4})
    assert stage_gpus(SlurmConfig(), list(STAGES), {"NUM_PROCESSES": 4})["03_sft"] == 4
    assert stage_gpus(SlurmConfig(), list(STAGES), {"STUDENT_BASE_URL": "http://vllm:8000/v1"})["04_eval_ablations"] == 0


SINFO = "cpu*|(null)|64|1-00:00:00|up\ngpu|gpu:a100:8(S:0-1)|128|2-00:00:00|up\ngpu|gpu:h100:4,shard:8|96|2-00:00:00|up\n"


def test_partitions_from_sinfo():
    parts = query_partitions(lambda argv: SINFO)
    assert parts["cpu"] == Partition("cpu", True, 0, 64, 1440, True)
    assert parts["gpu"].max_gpus == 8 and parts["gpu"].max_cpus == 128 and not parts["gpu"].default


def test_resource_checks_name_the_parameter_and_fix():
    parts = query_partitions(lambda argv: SINFO)
    ok = SlurmConfig.from_params({"SLURM_PARTITION": {"default": "", "03": "gpu", "04": "gpu"},
                                  "SLURM_GPUS": {"03": 8}, "SLURM_CPUS": 8})
    check_resources(ok, STAGES, {s: ok.gpus_for(s) for s in STAGES}, parts)
    cases = [({"SLURM_PARTITION": "gpuu"}, "SLURM_PARTITION", "unknown partition 'gpuu'"),
             ({}, "SLURM_GPUS", "partition 'cpu' has 0 per node"),  # the default partition has no GPUs
             ({"SLURM_PARTITION": "gpu", "SLURM_GPUS": {"03": 16}}, "SLURM_GPUS", "has 8 per node"),
             ({"SLURM_PARTITION": "gpu", "SLURM_CPUS": 256}, "SLURM_CPUS", "at most 128"),
             ({"SLURM_PARTITION": "gpu", "SLURM_TIME": "3-00:00:00"}, "SLURM_TIME", "allows 2-00:00:00")]
    for params, name, problem in cases:
        cfg = SlurmConfig.from_params(params)
        with pytest.raises(ParameterError) as err:
            check_resources(cfg, STAGES, {s: cfg.gpus_for(s) for s in STAGES}, parts)
        assert err.value.name == name and problem in err.value.problem, err.value
    cfg = SlurmConfig()
    with pytest.raises(ParameterError) as err:
        check_resources(cfg, STAGES, {s: cfg.gpus_for(s) for s in STAGES}, parts)
    assert "SLURM_GPUS to 0" in err.value.fix


def test_slurm_not_reachable(monkeypatch):
    monkeypatch.setattr(checks_module.shutil, "which", lambda name: None)
    with pytest.raises(ParameterError) as err:
        query_partitions()
    assert err.value.name == "--executor" and "--executor local" in err.value.fix


def test_rendered_scripts_hold_no_secret_and_chain_by_task(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-in-any-script")
    cfg = SlurmConfig.from_params({"SLURM_CPUS": 1, "SLURM_EXTRA": {"03": ["--constraint=h100"]}})
    cells = [StageTask(f"c{i}", StageJob(str(tmp_path / f"c{i}"), "03_sft", {"SEED": i})) for i in range(2)]
    plan = Plan([StageBatch("01_extract_skills:shared", "01_extract_skills",
                            [StageTask("s1", StageJob(str(tmp_path / "s1"), "01_extract_skills", {}))], 0),
                 StageBatch("02_generate", "02_generate", cells, 0, after=["01_extract_skills:shared"]),
                 StageBatch("03_sft", "03_sft", cells, 1, after=["02_generate"], corr=True)], tmp_path / "slurm")
    text = render_plan(plan, cfg)
    assert "sk-not-in-any-script" not in text
    assert "afterok:<01_extract_skills:shared>" in text and "aftercorr:<02_generate>" in text
    assert "#SBATCH --array=0-1%2" in text and "#SBATCH --gres=gpu:1" in text and "--constraint=h100" in text
    assert "#SBATCH --requeue" in text and "#SBATCH --kill-on-invalid-dep=yes" in text
    assert "--cpus-per-task 1" in text  # srun does not inherit it since Slurm 22.05
    assert not (tmp_path / "slurm").exists()  # a dry run writes nothing


def test_stage_three_jobs_are_resumable():
    assert job_params("03_sft", {})["RESUMABLE"] is True
    assert job_params("03_sft", {"RESUMABLE": False}, log=lambda _: None)["RESUMABLE"] is False
    assert "RESUMABLE" not in job_params("02_generate", {})


CALLS: list[tuple[str, str]] = []


def fake_runner(run_dir, params, notebooks=(), stream_progress=False):
    """Stands in for run_pipeline in the job (resolved by its dotted name, as in a real job)."""
    CALLS.append((str(run_dir), notebooks[0]))
    if params.get("FAIL"):
        raise RuntimeError("03_sft failed in cell 9: ValueError: boom")
    (Path(run_dir) / "results.json").write_text(json.dumps({"evaluate": {"win_rate": 50.0}}))


def test_stage_job_records_skips_a_finished_stage_and_reports_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    CALLS.clear()
    runner = f"{__name__}:fake_runner"
    cell = {"cell": "c", "params": {"SEED": 0}, "seed": 0, "stages": ["04_eval_ablations"]}
    (tmp_path / "shared.txt").write_text("lists")
    job = StageJob(str(tmp_path / "c"), "04_eval_ablations", {"SEED": 0}, runner=runner, cell=cell, last=True,
                   copy_files=[(str(tmp_path / "shared.txt"), str(tmp_path / "c" / "shared.txt"))])
    assert job() == "done" and (tmp_path / "c" / "shared.txt").exists()
    record = read_stage_record(tmp_path / "c", "04_eval_ablations")
    assert record["state"] == "done" and record["restarts"] == 1 and record["job"] == "77"
    assert json.loads((tmp_path / "c" / "cell.json").read_text())["status"] == "ok"
    assert job() == "done before" and len(CALLS) == 1  # a requeue after the stage finished runs nothing
    assert stage_done(tmp_path / "c", "04_eval_ablations", {"SEED": 0})
    assert not stage_done(tmp_path / "c", "04_eval_ablations", {"SEED": 1})
    bad = StageJob(str(tmp_path / "d"), "03_sft", {"FAIL": True}, runner=runner, cell=cell)
    with pytest.raises(RuntimeError):
        bad()
    assert read_stage_record(tmp_path / "d", "03_sft")["state"] == "failed"
    cell_json = json.loads((tmp_path / "d" / "cell.json").read_text())
    assert cell_json["status"] == "failed" and "boom" in cell_json["error"]


def test_status_from_records_and_queue(tmp_path):
    from helpers.cluster.jobs import write_stage_record

    folder = tmp_path / "slurm"
    folder.mkdir()
    runs = {name: tmp_path / name for name in ("done", "failed", "requeued", "pending")}
    tasks = {"02_generate": {k: f"10_{i}" for i, k in enumerate(runs)},
             "03_sft": {k: f"11_{i}" for i, k in enumerate(runs)}}
    batches = [{"name": s, "stage": s, "job_id": t[next(iter(t))].split("_")[0], "tasks": t,
                "run_dirs": {k: str(v) for k, v in runs.items()}} for s, t in tasks.items()]
    (folder / "jobs.json").write_text(json.dumps({"submissions": [{"batches": batches}]}))
    for name, run in runs.items():
        write_stage_record(run, "02_generate", {"state": "done", "job": tasks["02_generate"][name]})
    write_stage_record(runs["done"], "03_sft", {"state": "done", "job": "11_0"})
    write_stage_record(runs["failed"], "03_sft", {"state": "failed", "job": "11_1", "error": "ValueError: boom"})
    (runs["failed"] / "logs").mkdir()
    (runs["failed"] / "logs" / "03_sft.11_1.err").write_text("Traceback\n  line\nValueError: boom\n")

    def fake(argv):
        if argv[0] == "squeue":
            return "11_2|RUNNING|None\n11_3|PENDING|Dependency\n"
        return "JobId=50 ArrayJobId=11 ArrayTaskId=2 JobState=RUNNING Restarts=1\n"

    text, states = format_status(folder, fake)
    assert states == {"done": "done", "failed": "failed", "requeued": "requeued", "pending": "pending"}
    assert "ValueError: boom" in text and "| Traceback" in text


def test_resubmission_skips_only_cells_with_a_live_job(tmp_path, monkeypatch):
    import helpers.slurm_driver as driver

    folder = tmp_path / "slurm"
    folder.mkdir()
    batch = {"name": "02_generate", "stage": "02_generate", "job_id": "10",
             "tasks": {"a": "10_0", "b": "10_1", "c": "10_2"}, "run_dirs": {}}
    (folder / "jobs.json").write_text(json.dumps({"submissions": [{"batches": [batch]}]}))

    def fake(argv):
        if argv[0] == "squeue":
            return "10_0|RUNNING|None\n"
        return ("JobId=1 ArrayJobId=10 ArrayTaskId=0 JobState=RUNNING Restarts=0\n"
                "JobId=2 ArrayJobId=10 ArrayTaskId=1 JobState=FAILED Restarts=0\n")

    monkeypatch.setattr(driver, "run_slurm_command", fake)
    assert driver.queued_cells(tmp_path) == {"a": "10_0"}  # b failed (resubmit it), c left the queue


def test_sweep_dry_run_prints_scripts_and_graph_without_slurm(tmp_path, capsys, monkeypatch):
    from helpers.sweep import main

    monkeypatch.setattr(checks_module.shutil, "which", lambda name: None)  # no Slurm here: a dry run needs none
    out, grid = tmp_path / "sweep", str(Path(__file__).resolve().parent.parent / "configs/grids/shirkers_tiny.yaml")
    code = main(["--grid", grid, "--out", str(out), "--executor", "slurm", "--dry-run",
                 "--set", "SLURM_CPUS=1", "--set", "SLURM_TIME=1:30:00"])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert "02_generate: array of 6" in text and "03_sft: array of 6 (default partition, 1 GPU, 1 CPU, 1:30:00), after aftercorr" in text
    assert text.count("#!/bin/bash") == 4 and "#SBATCH --time=90" in text
    assert main(["--grid", grid, "--out", str(out), "--set", "SLURM_CPUS=1"]) == 2
    assert "add --executor slurm" in capsys.readouterr().err


def test_status_of_a_failed_job_still_in_the_queue_shows_its_error(tmp_path):
    from helpers.cluster.jobs import write_stage_record

    folder, run = tmp_path / "slurm", tmp_path / "run"
    folder.mkdir()
    batch = {"name": "03_sft", "stage": "03_sft", "job_id": "16", "tasks": {"run": "16"}, "run_dirs": {"run": str(run)}}
    (folder / "jobs.json").write_text(json.dumps({"submissions": [{"batches": [batch]}]}))
    write_stage_record(run, "03_sft", {"state": "failed", "job": "16", "error": "NotebookFailed: MAX_LENGTH: all"})
    text, states = format_status(folder, lambda argv: "" if argv[0] == "squeue" else
                                 "JobId=16 JobState=FAILED Reason=NonZeroExitCode Restarts=0\n")
    assert states == {"run": "failed"} and "MAX_LENGTH" in text.splitlines()[0]


def test_time_out_or_preemption_requeues_the_same_job():
    """submitit calls checkpoint() on SIGUSR2 (time limit near, or preemption) and requeues what it returns."""
    from submitit.helpers import DelayedSubmission

    job = StageJob("runs/x", "03_sft", {"SEED": 1})
    again = job.checkpoint()
    assert isinstance(again, DelayedSubmission) and again.function is job and not again.args
