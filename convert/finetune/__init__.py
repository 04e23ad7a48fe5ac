"""finetune: the fourth step of prepare -> calibrate -> convert -> finetune.

`settings` (what a run is configured by), `distill` (the teacher's pool and the objective),
`energy_objective` (the spikes' energy and the budget), `loop` (the run) and `report` (what it is
judged by).
"""

from convert.finetune.distill import PAIR_SOURCES
from convert.finetune.loop import finetune, prepare_student
from convert.finetune.report import finetune_budget, finetune_report, finetuned_steps, run_finetune
from convert.finetune.settings import TRAINABLE, FinetuneSettings, check_student

__all__ = ["PAIR_SOURCES", "TRAINABLE", "FinetuneSettings", "check_student", "finetune", "finetune_budget",
           "finetune_report", "finetuned_steps", "prepare_student", "run_finetune"]
