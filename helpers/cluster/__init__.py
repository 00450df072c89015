"""Running stages as Slurm jobs (through submitit): the executor's parameters, the cluster checks, the job function,
submission of chained job arrays and the status of a submission. Shared core: it names the stages only as strings
and reaches the pipeline driver by its dotted name inside the job."""
from .checks import Partition, check_resources, query_partitions, run_slurm_command
from .config import SlurmConfig, parse_time, read_profile, slurm_parameter_rows, split_slurm_params
from .jobs import StageJob, stage_done
from .status import format_status
from .submit import Plan, StageBatch, StageTask, render_plan, submit_plan

__all__ = ["Partition", "Plan", "SlurmConfig", "StageBatch", "StageJob", "StageTask", "check_resources",
           "format_status", "parse_time", "query_partitions", "read_profile", "render_plan", "run_slurm_command",
           "slurm_parameter_rows", "split_slurm_params", "stage_done", "submit_plan"]
