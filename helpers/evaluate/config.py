"""Stage 4's parameters as one checked object, so a bad value fails before any model is loaded.

Defaults are the notebook's offline demo (few instructions, short answers, a CPU judge); the paper's values are in
`configs/paper.yaml` and in the help strings.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import StageConfig, param, shared
from ..judge.judging import Judge
from ..judge.named import describe_judge, load_named_judge
from ..llm.client import ChatClient
from ..llm.endpoint import Endpoint
from ..llm.vllm_engine import resolve_engine
from ..params import ParameterError, check_choice, check_float, check_int
from .answers import DecodingConfig, read_selection, saved_chat_template
from .calibration import check_calibration
from .candidates import generator_name, read_outputs_file
from .sets import EVAL_SETS
from .suite import SHIRKER_KINDS

REFERENCES = ("bundled", "teacher")
STAGE = "evaluate"
JUDGE_PARAMETERS = ("PAIRWISE_JUDGE", "MT_BENCH_JUDGE", "MT_BENCH_REFERENCE_JUDGE", "WILDBENCH_JUDGE")


@dataclass
class EvalConfig(StageConfig):
    """Stage 4: who answers, who judges, on which sets, with which decoding, and which ablations are drawn."""

    run_dir: str = shared("run_dir")
    seed: int = shared("seed")
    student_model: str = param("", "The model evaluated: empty = stage 3's best checkpoint (RUN_DIR/sft/selection.json); "
                                   "else a model folder or an endpoint's model id.")
    student_base_url: str = param("", "OpenAI-compatible base URL serving STUDENT_MODEL; empty = in-process.")
    student_api_key_env: str = param("", "NAME of the environment variable holding the student endpoint's API key "
                                         "(never the key itself).")
    base_model: str = shared("base_model")
    compare_base: bool = param(True, "Also score BASE_MODEL, asked with the student's chat template, as a baseline.")
    judge_model: str = shared("judge_model")
    judge_base_url: str = shared("judge_base_url")
    judge_api_key_env: str = shared("judge_api_key_env")
    max_concurrency: int = shared("max_concurrency")
    request_timeout: float = shared("request_timeout")
    request_attempts: int = shared("request_attempts")
    local_dtype: str = shared("local_dtype")
    local_engine: str = shared("local_engine")
    judge_max_requests_per_minute: float | None = shared("judge_max_requests_per_minute")
    judge_max_tokens_per_minute: float | None = shared("judge_max_tokens_per_minute")
    judge_batch: bool = shared("judge_batch")
    teacher_max_requests_per_minute: float | None = shared("teacher_max_requests_per_minute")
    teacher_max_tokens_per_minute: float | None = shared("teacher_max_tokens_per_minute")
    teacher_batch: bool = shared("teacher_batch")
    reference: str = param("bundled", "'bundled' = the eval set's reference outputs; 'teacher' = answers from "
                                      "TEACHER_*.")
    teacher_model: str = shared("teacher_model")
    teacher_base_url: str = shared("teacher_base_url")
    teacher_api_key_env: str = shared("teacher_api_key_env")
    eval_set: str = param("bundled", "'bundled' | 'alpaca_eval' | 'wildbench' (hub sets need network or a local "
                                     "file).")
    eval_source: str = param("", "A local file in the hub set's schema, or a hub id; empty = the set's default.")
    n_eval: int = param(12, "Instructions evaluated (0 = all; the bundled set has 50).")
    mt_bench_source: str = param("bundled", "'bundled' (8 demo questions), a question.jsonl, or a hub id.")
    n_mt_bench: int = param(3, "MT-Bench questions (0 = all).")
    run_mt_bench: bool = param(True, "Run the MT-Bench-style two-turn grading.")
    run_wildbench: bool = param(True, "Run the WildBench-style checklist grading.")
    answer_temperature: float = param(0.9, "Answer sampling temperature (the paper: 0.9).")
    answer_top_p: float = param(1.0, "Answer nucleus mass (the paper: 1.0).")
    answer_max_tokens: int = param(64, "Answer length cap in tokens (the paper: 2048; small for a CPU, where every "
                                         "answer token is a decoding step and lengthens the judge's prompts).")
    pairwise_judge: str = param("alpaca_eval_pairwise", "Pairwise judge: a kit judge folder (helpers/judge/configs/) "
                                                        "or an owner's, e.g. "
                                                        "'alpaca_eval:weighted_alpaca_eval_gpt4_turbo' (the leaderboard's).")
    mt_bench_judge: str = param("mt_bench_single", "MT-Bench judge: a kit judge folder or 'fastchat:single-v1' "
                                                   "(FastChat's own prompts).")
    mt_bench_reference_judge: str = param("mt_bench_single_reference", "Judge for MT-Bench's math, reasoning and "
                                                                       "coding questions (graded against a reference "
                                                                       "solution), e.g. 'fastchat:single-math-v1'.")
    wildbench_judge: str = param("wildbench_checklist", "Checklist judge: a kit judge folder or 'wildbench:score.v2'.")
    judge_max_tokens: int = param(48, "Cap on rating judges' replies in tokens, for a CPU (0 = the judge config's own "
                                      "setting).")
    shirker_probe_fractions: list = param(default_factory=lambda: [0.0, 0.5],
                                          help="Fractions of student answers replaced by shirker stand-ins in the "
                                               "probe, re-judged with PAIRWISE_JUDGE (any owner; one judge call per "
                                               "item, kind and fraction); [] = no probe.")
    shirker_probe_kinds: list = param(default_factory=lambda: ["brevity", "junk"],
                                      help="Shirker kinds of the probe: 'brevity' and/or 'junk'.")
    sweep_csv: str = param("", "A sweep.csv from `python -m helpers.sweep` to draw the ablation curves; empty = none.")
    candidate_outputs: str = param("", "An AlpacaEval model_outputs.json judged as the candidate instead of a trained "
                                       "model (matched by instruction); empty = the student.")
    calibration_outputs: str = param("", "A yardstick judged beside the student with the same judge, items, order "
                                         "seed and GLM, recorded as model 'paper_model': 'paper' = the paper's "
                                         "model's published AlpacaEval answers (Llama-3-8B-Instruct-SkillMix, from "
                                         "ALPACA_EVAL_REPO or a pinned download), or a model_outputs.json; "
                                         "empty = none.")
    alpaca_eval_repo: str = param("", "Root of a local clone of tatsu-lab/alpaca_eval, read for "
                                      "CALIBRATION_OUTPUTS='paper'; empty = download the pinned file.")
    ae_glm_data: str = param("", "Folder with AlpacaEval's df_gamed.csv for the leaderboard's LC "
                                 "(length_controlled_v1); empty = the hub when reachable, else 'LC (minimal GLM)'.")
    fastchat_repo: str = param("", "Root of a FastChat clone for its MT-Bench judges; empty = download the pinned "
                                   "files.")
    wildbench_repo: str = param("", "Root of a WildBench clone for its templates; empty = download the pinned files.")
    mt_bench_sampling: str = param("fastchat_temperatures", "'fastchat' = FastChat's per-category temperatures and "
                                                            "1,024 tokens (the paper); 'fastchat_temperatures' = its "
                                                            "temperatures within ANSWER_MAX_TOKENS; 'answer' = the "
                                                            "ANSWER_* settings.")
    run_wb_reward: bool = param(False, "Also compute WB-Reward (pairwise against WB_REWARD_REFERENCE's answers) on "
                                       "WildBench tasks.")
    wb_reward_judge: str = param("wildbench:pairwise.v2", "Pairwise judge for WB-Reward (WildBench's pairwise.v2 "
                                                          "template).")
    wb_reward_reference: str = param("", "Reference answers for WB-Reward: a JSON/JSONL file (session_id, output); "
                                         "empty = the hub's gpt-4-turbo-2024-04-09 outputs.")
    wb_reward_k: int = param(-1, "WildBench's length margin in characters (-1 = none, the paper's setting).")
    dry_run: bool = shared("dry_run")

    def check_values(self) -> None:
        self.seed = check_int("SEED", self.seed)
        self.max_concurrency = check_int("MAX_CONCURRENCY", self.max_concurrency, 1, 4096)
        for endpoint in (self.judge(), self.teacher(), Endpoint.from_params(self, "STUDENT")):
            endpoint.validate()
        check_choice("REFERENCE", self.reference, REFERENCES)
        check_choice("EVAL_SET", self.eval_set, EVAL_SETS)
        self.n_eval = check_int("N_EVAL", self.n_eval, 0)
        self.n_mt_bench = check_int("N_MT_BENCH", self.n_mt_bench, 0)
        self.judge_max_tokens = check_int("JUDGE_MAX_TOKENS", self.judge_max_tokens, 0, 32768)
        self.decoding().validate("ANSWER")
        judges = {name: self.named_judge(name) for name in self.judge_parameters()}
        if judges["PAIRWISE_JUDGE"].kind != "pairwise":
            raise ParameterError("PAIRWISE_JUDGE", f"{self.pairwise_judge!r} is not a pairwise judge",
                                 "use alpaca_eval:weighted_alpaca_eval_gpt4_turbo or alpaca_eval_pairwise")
        if self.local_engine == "vllm":
            resolve_engine(self.local_engine, "cpu")  # vLLM must be installed: fail before any model is asked
        check_choice("MT_BENCH_SAMPLING", self.mt_bench_sampling, ("fastchat", "fastchat_temperatures", "answer"))
        self.wb_reward_k = check_int("WB_REWARD_K", self.wb_reward_k, -1)
        if self.candidate_outputs:
            read_outputs_file(self.candidate_outputs)
        check_calibration(self.calibration_outputs, self.eval_set, self.alpaca_eval_repo)
        for fraction in self.shirker_probe_fractions:
            check_float("SHIRKER_PROBE_FRACTIONS", fraction, 0.0, 1.0)
        for kind in self.shirker_probe_kinds:
            check_choice("SHIRKER_PROBE_KINDS", kind, SHIRKER_KINDS)
        if self.eval_set == "wildbench" and self.reference == "bundled":
            raise ParameterError("REFERENCE", "WildBench has no reference outputs", "set REFERENCE='teacher'")
        if self.sweep_csv and not Path(self.sweep_csv).exists():
            raise ParameterError("SWEEP_CSV", f"{self.sweep_csv!r} does not exist",
                                 "run `python -m helpers.sweep --grid shirkers --out sweeps/shirkers` first, or leave it empty")

    def check_inputs(self) -> None:
        """Stage 3's choice of checkpoint, unless STUDENT_MODEL names the model."""
        if not self.student_model and not self.candidate_outputs:
            read_selection(self.run_dir)

    # -------------------------------------------------------------- what the notebook uses
    def decoding(self) -> DecodingConfig:
        return DecodingConfig(self.answer_temperature, self.answer_top_p, self.answer_max_tokens, self.seed)

    def judge_parameters(self) -> tuple[str, ...]:
        return JUDGE_PARAMETERS + (("WB_REWARD_JUDGE",) if self.run_wb_reward else ())

    def named_judge(self, name: str) -> Any:
        """The judge a judge parameter (e.g. 'PAIRWISE_JUDGE') names: the kit's or an owner's."""
        return load_named_judge(getattr(self, name.lower()), name, self.fastchat_repo, self.wildbench_repo)

    def rating_judge(self, name: str) -> Any:
        """A rating judge; the kit's own get the demo's reply cap (recorded via its description)."""
        judge = load_named_judge(name, "MT_BENCH_JUDGE", self.fastchat_repo, self.wildbench_repo)
        if isinstance(judge, Judge) and self.judge_max_tokens:
            return replace(judge, max_tokens=self.judge_max_tokens)
        return judge

    def judges(self) -> dict[str, dict[str, Any]]:
        """What every judge parameter names, for the manifest."""
        return {name: describe_judge(self.named_judge(name)) for name in self.judge_parameters()}

    def student(self) -> Endpoint:
        """The evaluated model: STUDENT_MODEL, or stage 3's best checkpoint (or the generator named by
        CANDIDATE_OUTPUTS, which is judged from its file and never asked)."""
        if self.candidate_outputs:
            return Endpoint("STUDENT", generator_name(self.candidate_outputs))
        model = self.student_model or str(read_selection(self.run_dir)["best_checkpoint"])
        return Endpoint("STUDENT", model, self.student_base_url, self.student_api_key_env)

    def judge(self) -> Endpoint:
        return Endpoint.from_params(self, "JUDGE")

    def teacher(self) -> Endpoint:
        return Endpoint.from_params(self, "TEACHER")


def connect_answerers(cfg: EvalConfig) -> dict[str, ChatClient]:
    """Clients for the models being evaluated: the student and, if set, the base model asked through the student's
    saved chat template (base checkpoints have none of their own). None with CANDIDATE_OUTPUTS: nothing to ask."""
    if cfg.candidate_outputs:
        return {}
    student = cfg.student()
    clients = {"student": cfg.connect(student, STAGE)}
    if cfg.compare_base and cfg.base_model:
        template = saved_chat_template(student.model) if student.is_local else None
        clients["base"] = cfg.connect(Endpoint("BASE", cfg.base_model), STAGE, chat_template=template)
    return clients
