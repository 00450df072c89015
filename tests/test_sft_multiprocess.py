"""Multi-process SFT, run for real on CPU, and the multi-GPU command and configs.

The slow test launches the SFT script with `accelerate launch --num_processes 2` and the shipped DDP config on CPU
(gloo), and the same configuration as one process with the same effective batch. Both runs record, per process,
the training rows each micro-batch fetched and every write under the run folder (`helpers.sft.process_trace`).

Loss tolerance: the two runs train on the same rows in every optimizer step (checked first), so their gradients
differ only by float32 summation order (gloo's all-reduce vs one process accumulating). Measured: at most 5e-7 on
train and held-out losses of about 5 over 4 steps at lr 1e-2. The tolerance, 1e-4, leaves room for Adam amplifying
those rounding differences on another CPU, and is far below what a real fault does: with the held-out evaluation
called before `train()` (a bug this test caught), each process trained its own unsynchronised copy and the losses
differed by 0.05 to 0.13 from the second optimizer step on.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.runs import PROJECT_ROOT
from helpers.config import parse_assignment
from helpers.sft.config import SFTStageConfig
from helpers.sft.launch import launch_command
from sft_tiny import ARITHMETIC_HELDOUT, ARITHMETIC_TRAIN, micro_batches, write_jsonl

PROCESSES = 2
PER_DEVICE = 2
EFFECTIVE_BATCH = 8  # = PER_DEVICE x PROCESSES x 2 accumulation steps = PER_DEVICE x 1 process x 4
STEPS = 4
LOSS_TOLERANCE = 1e-4
TRAIN, HELDOUT = ARITHMETIC_TRAIN, ARITHMETIC_HELDOUT
SETTINGS = ["USE_LORA=false", f"MAX_STEPS={STEPS}", "SAVE_EVERY=2", f"PER_DEVICE_BATCH_SIZE={PER_DEVICE}",
            f"EFFECTIVE_BATCH_SIZE={EFFECTIVE_BATCH}", "MAX_LENGTH=96", "LEARNING_RATE=0.01", "LR_SCHEDULER=constant",
            "WARMUP_RATIO=0.0", "LOGGING_STEPS=1", "MAX_NEW_TOKENS=4", "COMPARE_EXAMPLES=0", "SELECTION_EXAMPLES=2",
            "SELECTION=heldout_loss"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp: Path, name: str, base: Path, processes: int) -> dict:
    """One SFT run as a script; returns its run folder, trace folder and the trainer's log history."""
    run_dir, trace = tmp / name / "run", tmp / name / "trace"
    write_jsonl(run_dir / "data" / "train.jsonl", TRAIN)
    write_jsonl(run_dir / "data" / "heldout.jsonl", HELDOUT)
    script = ["-m", "helpers.sft", "--config", str(PROJECT_ROOT / "configs" / "sft" / "demo.yaml"),
              "--set", f"RUN_DIR={run_dir}", f"BASE_MODEL={base}", *SETTINGS]
    launcher = ["-m", "accelerate.commands.launch", "--config_file",
                str(PROJECT_ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", str(processes),
                "--mixed_precision", "no", "--main_process_port", str(_free_port())] if processes > 1 else []
    # CPU only, even on a GPU machine: no visible CUDA device, and accelerate / transformers told so.
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1", "ISM_SFT_TRACE_DIR": str(trace)}
    proc = subprocess.run([sys.executable, *launcher, *script], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((run_dir / "sft" / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return {"run_dir": run_dir, "trace": trace, "history": state["log_history"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_base) -> dict:
    tmp = tmp_path_factory.mktemp("multiprocess")
    return {"multi": _run(tmp, "multi", tiny_base, PROCESSES), "single": _run(tmp, "single", tiny_base, 1)}


def _rows_per_step(trace: Path, rank: int, accumulation: int) -> list[list[int]]:
    """The rows of each optimizer step: `accumulation` consecutive micro-batches (the loader may read one ahead)."""
    batches = micro_batches(trace, rank)
    assert len(batches) >= STEPS * accumulation
    return [sum(batches[s * accumulation:(s + 1) * accumulation], []) for s in range(STEPS)]


def _logged(history: list[dict], key: str) -> dict[int, float]:
    return {h["step"]: h[key] for h in history if key in h}


@pytest.mark.slow
def test_each_process_sees_different_rows_and_steps_have_the_effective_batch(runs):
    trace = runs["multi"]["trace"]
    accumulation = EFFECTIVE_BATCH // (PER_DEVICE * PROCESSES)
    assert all(len(b) == PER_DEVICE for r in range(PROCESSES) for b in micro_batches(trace, r))
    per_rank = [_rows_per_step(trace, r, accumulation) for r in range(PROCESSES)]
    for step in range(STEPS):
        rank0, rank1 = set(per_rank[0][step]), set(per_rank[1][step])
        assert not rank0 & rank1, f"step {step + 1}: both processes trained on {rank0 & rank1}"
        assert len(per_rank[0][step]) + len(per_rank[1][step]) == len(rank0 | rank1) == EFFECTIVE_BATCH
    steps_per_epoch = len(TRAIN) // EFFECTIVE_BATCH
    for epoch in range(STEPS // steps_per_epoch):  # each epoch covers every training row exactly once
        steps = range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        rows = sorted(row for r in range(PROCESSES) for s in steps for row in per_rank[r][s])
        assert rows == list(range(len(TRAIN)))
    # The single process with 4 accumulation steps trains on the same rows in every optimizer step.
    single = _rows_per_step(runs["single"]["trace"], 0, EFFECTIVE_BATCH // PER_DEVICE)
    assert [sorted(per_rank[0][s] + per_rank[1][s]) for s in range(STEPS)] == [sorted(s) for s in single]
    assert not (runs["single"]["trace"] / "rank1.rows.jsonl").exists()
    # ...and so on the same number of tokens (TRL counts the tokens of every process).
    assert _logged(runs["multi"]["history"], "num_tokens") == _logged(runs["single"]["history"], "num_tokens")


@pytest.mark.slow
def test_only_the_main_process_writes_the_run_folder(runs):
    run_dir, trace = runs["multi"]["run_dir"], runs["multi"]["trace"]
    assert micro_batches(trace, 1), "the second process trained with the trace on"
    assert (trace / "rank1.writes.jsonl").read_text() == "", "the second process wrote in the run folder"
    written = {json.loads(line)["path"] for line in (trace / "rank0.writes.jsonl").read_text().splitlines()}
    sft = run_dir.resolve() / "sft"
    for path in (sft / "selection.json", sft / "checkpoints" / "checkpoint-2" / "config.json",
                 sft / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json", sft / "heldout_answers.jsonl"):
        assert str(path) in written and path.exists()
    assert json.loads((sft / "selection.json").read_text())["criterion"] == "heldout_loss"


@pytest.mark.slow
def test_losses_match_one_process_with_the_same_effective_batch(runs):
    multi, single = runs["multi"]["history"], runs["single"]["history"]
    for key, steps in (("loss", list(range(1, STEPS + 1))), ("eval_loss", [0, 2, STEPS])):
        got, want = _logged(multi, key), _logged(single, key)
        assert sorted(got) == sorted(want) == steps, key
        for step in steps:
            assert got[step] == pytest.approx(want[step], abs=LOSS_TOLERANCE), f"{key} at step {step}"
    assert _logged(multi, "loss")[STEPS] < _logged(multi, "loss")[1] - 0.5, "training moved the loss"


def test_write_trace_catches_a_write_by_a_non_main_process(tmp_path):
    """The audit hook behind the check above: a process with RANK=1 that writes under RUN_DIR is logged."""
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    run_dir.mkdir()
    code = ("import sys; from pathlib import Path; from helpers.sft.process_trace import record_writes_under; "
            "record_writes_under(sys.argv[1]); Path(sys.argv[1], 'sub').mkdir(); "
            "Path(sys.argv[1], 'sub', 'a.json').write_text('{}'); open(Path(sys.argv[1]).parent / 'outside', 'w')")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RANK": "1", "ISM_SFT_TRACE_DIR": str(trace)}
    subprocess.run([sys.executable, "-c", code, str(run_dir)], env=env, check=True, timeout=60)
    logged = [json.loads(line) for line in (trace / "rank1.writes.jsonl").read_text().splitlines()]
    root = run_dir.resolve()
    assert [(e["event"], e["path"]) for e in logged] == [("os.mkdir", str(root / "sub")),
                                                         ("open", str(root / "sub" / "a.json"))]


def test_paper_command_for_eight_gpus():
    cfg = SFTStageConfig.load(PROJECT_ROOT / "configs" / "sft" / "paper.yaml")
    assert launch_command(cfg, "fsdp") == ("accelerate launch --config_file configs/accelerate/fsdp.yaml "
                                           "--num_processes 8 -m helpers.sft --config configs/sft/paper.yaml")
    # 8 GPUs x 4 per device x 4 accumulation steps = the paper's 128 from 4,000 examples on (64 below)
    assert cfg.gradient_accumulation(4000, 8) * 8 * cfg.per_device_batch_size == 128
    assert cfg.gradient_accumulation(1000, 8) * 8 * cfg.per_device_batch_size == 64


def test_launch_command_reproduces_the_configuration():
    """The printed overrides, read back by the script, give exactly the notebook's configuration."""
    import shlex

    cfg = SFTStageConfig(profile="paper", run_dir="runs/x y", base_model="meta-llama/Meta-Llama-3-8B", learning_rate=1e-5,
                      judge_base_url="", judge_model="gpt-4-1106-preview", max_concurrency=4)
    words = shlex.split(launch_command(cfg, "ddp", num_processes=4))
    assert words[:8] == ["accelerate", "launch", "--config_file", "configs/accelerate/ddp.yaml", "--num_processes",
                         "4", "-m", "helpers.sft"]
    sets = words[words.index("--set") + 1:]
    # Emptied values are overrides too: the YAML file sets a judge endpoint and key variable this configuration lacks.
    assert [parse_assignment(s)[0] for s in sets] == ["RUN_DIR", "LEARNING_RATE", "JUDGE_BASE_URL", "JUDGE_API_KEY_ENV",
                                                    "MAX_CONCURRENCY"]
    assert SFTStageConfig.load(PROJECT_ROOT / words[words.index("--config") + 1], sets) == cfg


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_accelerate_configs_load_and_launch_on_eight_processes(name, kind):
    """What can be checked without GPUs: accelerate's own loader and launch validation accept every config."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = str(PROJECT_ROOT / "configs" / "accelerate" / f"{name}.yaml")
    config = load_config_from_file(path)
    assert config.distributed_type.name == kind and config.num_processes == 8 and config.mixed_precision == "bf16"
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", path, "-m", "x"]))
    assert args.num_processes == 8
    if name == "fsdp":
        assert args.use_fsdp and config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # checkpoints reload as plain models
    if name == "deepspeed_zero3":
        assert args.use_deepspeed and args.zero_stage == 3 and config.deepspeed_config["zero3_save_16bit_model"]
