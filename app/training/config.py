"""What a training run is asked to do (TrainConfig) and where the repository lies. The bottom of
app.training: it imports nothing else from the package."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class TrainConfig:
    task_dir: Path
    work_dir: Path
    out: Path | None
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 1000
    iterations: int = 250          # training batches per epoch (nnunet: 250)
    val_iterations: int = 50       # validation batches per epoch (nnunet: 50)
    planner: str = "default"
    processes: int = 2             # preprocessing processes
    da_workers: int = 2            # augmentation workers (nnUNet_n_proc_DA)
    torch_threads: int | None = None  # None: 1 on a CPU, torch's default on CUDA
    validation_tta: bool = True    # mirroring during the post-training validation
    export_dtype: str = "float32"
    seed: int | None = None
    data_description: dict = field(default_factory=dict)
    measure_predict_on: Path | None = None   # a CT to time `python -m app predict` on after export
    fp16: bool | None = None       # None: on CUDA only
    # CPU demo only: first train one model on all cases ("fold all") for this many epochs, then
    # start every fold from its weights. 0 (default, the real recipe): every fold from scratch.
    warm_start_epochs: int = 0
    warm_start_iterations: int = 0
    warm_start_init: Path | None = None     # checkpoint the warm-start model itself starts from
    warm_start_lr: float | None = None      # None: nnunet's 1e-2
    fold_initial_lr: float | None = None    # None: nnunet's 1e-2
    fold_init: Path | None = None           # start every fold from this checkpoint (no warm-start run)
    # the folds' runs cover the CE-to-Dice schedule from this fraction on (0: all of it; 0.75:
    # Dice only, for fine-tunes of a model that ended its own schedule in Dice)
    fold_schedule_start: float = 0.0
    # Wall-clock budget per fold: the epoch count is fitted to it after a few epochs (see trainer).
    time_budget_s: float | None = None
    batch_size: int | None = None           # None: the plan's
    base_features: int | None = None        # None: the plan's; else a wider (or narrower) network
    # v1's segmentation_export_params interpolation_order_z written into the plans (None: the plans'
    # own; the demo planner writes 1, v1's default is 0), for plans made before the planner wrote it
    export_interpolation_order_z: int | None = None
    parallel_folds: bool = False            # one process per fold (a GPU with room for several)
    resume: bool = False                    # --continue: unfinished folds go on from their latest checkpoint
    stop_after_epochs: int | None = None    # end this invocation after so many epochs per fold (checkpointed)
    validation_cases: int | None = None     # None: nnunet's full validation of every held-out case
    prepare_only: bool = False              # plan, preprocess, unpack and split, then stop (before fold jobs)
    # Two-stage prediction's localiser (coarse plan, one model on all cases); 0: none is trained.
    localiser_epochs: int = 0
    localiser_iterations: int = 0           # batches per epoch of the localiser (0: as `iterations`)
    localiser_init: Path | None = None      # checkpoint the localiser starts from (same network shape)
    localiser_lr: float | None = None       # None: nnunet's 1e-2

    @property
    def scaled_trainer(self) -> bool:
        return (self.time_budget_s is not None or self.batch_size is not None or self.base_features is not None
                or self.fold_schedule_start > 0 or self.export_interpolation_order_z is not None)


PATH_FIELDS = {f.name for f in dataclasses.fields(TrainConfig) if "Path" in str(f.type)}


def config_to_json(cfg: TrainConfig) -> str:
    raw = dataclasses.asdict(cfg)
    return json.dumps({k: (str(v) if k in PATH_FIELDS and v is not None else v) for k, v in raw.items()})


def config_from_json(text: str) -> TrainConfig:
    raw = json.loads(text)
    for k in PATH_FIELDS:
        if raw.get(k) is not None:
            raw[k] = Path(raw[k])
    raw["folds"] = tuple(raw["folds"])
    return TrainConfig(**raw)
