"""Stage 3: vanilla SFT of a base model on the generated data (notebooks/03_sft.ipynb, `python -m helpers.sft`)."""
from .config import SFTStageConfig
from .data import masked_view
from .launch import launch_command
from .plots import comparison_table, loss_curves, masked_html
from .stage import SFTStageResult, load_data, preview_example, run_sft_stage, with_planned_examples

__all__ = ["SFTStageConfig", "SFTStageResult", "comparison_table", "launch_command", "load_data", "loss_curves",
           "masked_html", "masked_view", "preview_example", "run_sft_stage", "with_planned_examples"]
