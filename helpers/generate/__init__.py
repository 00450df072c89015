"""Stage 2: skill-mixed instruction data from the teacher (notebooks/02_generate.ipynb)."""
from . import plots
from .config import GenerateConfig
from .estimate import estimate_generation, estimate_table
from .prompt_versions import get_version
from .sampling import pair_report
from .stage import (GenerationOutcome, heldout_seed, load_flow, load_stage1_inputs, make_plans,
                    record_outcome, run_generation)

__all__ = ["GenerateConfig", "GenerationOutcome", "estimate_generation", "estimate_table",
           "get_version", "heldout_seed", "load_flow", "load_stage1_inputs", "make_plans", "pair_report", "plots", "record_outcome",
           "run_generation"]
