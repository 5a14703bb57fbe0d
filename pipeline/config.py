"""The pipeline's YAML config: typed sections, defaults that run anywhere, errors that name the key.

A config is a small tree of dataclasses; ``load_config`` reads YAML (or takes a dict), rejects unknown
keys and wrong types with the dotted path of the offending key, and fills every default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from mtl_models import zoo

__all__ = ["PipelineConfig", "ConfigError", "load_config", "config_to_dict", "select_models", "DEFAULT_CONFIG"]

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "default.yaml"
BASELINES = ("single_task", "gbdt")  # train.baselines


class ConfigError(ValueError):
    """A config file that cannot be used as written; the message names the key."""


@dataclass
class DatasetConfig:
    name: str = "synthetic-funnel"
    data_dir: Optional[str] = None
    seed: int = 42
    val_fraction: float = 0.1
    options: dict = field(default_factory=dict)
    user_column: Optional[str] = None  # the raw column naming the user (GAUC); None: a feature column "user_id"


@dataclass
class SearchConfig:
    n_trials: int = 4
    n_epoch: int = 2
    pruner: str = "median"
    objective: str = "mean"
    multi_objective: bool = False
    n_workers: int = 1
    storage: Optional[str] = None  # None: a journal file in the run's work directory
    space: dict = field(default_factory=dict)  # overrides of the search space: {"common": {...}, "<model>": {...}}
    timeout: Optional[float] = None  # seconds per model's search: no trial starts after it (Optuna's timeout)
    trial_timeout: Optional[float] = None  # seconds per trial: training stops after the epoch that passes it
    max_params: Optional[int] = None  # a sampled model with more parameters is skipped untrained, not counted


@dataclass
class TrainConfig:
    n_epoch: int = 5
    patience: int = 2
    batch_size: int = 1024
    device: str = "auto"
    seed: int = 42
    params: dict = field(default_factory=dict)  # per-model fixed hyperparameters, applied under the search's best
    # baselines beside the multi-task models: single_task (one model of each family per task, on that task alone,
    # logged on the model's run), gbdt (HistGradientBoosting per task on the same splits, a row in the summary)
    baselines: list = field(default_factory=list)
    nproc_per_node: int = 1  # > 1: data-parallel training under torchrun (one process per GPU, or CPU processes)
    n_nodes: int = 1  # > 1: a Kubeflow PyTorchJob of n_nodes pods (docs/distributed.md)
    job_namespace: str = "kubeflow"  # where the PyTorchJob runs (the pipeline's namespace)
    job_service_account: str = "mtl-pipeline-runner"
    shared_pvc: Optional[str] = None  # ReadWriteMany claim the train step and the job's pods share (n_nodes > 1)


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # None: MLFLOW_TRACKING_URI, else the runs root's SQLite store (mtlp-runs/mlflow.db)
    isolated: bool = False  # true (no uri set): this run logs to its own store, <run folder>/mlflow.db
    experiment: str = "mtl-pipeline"
    registered_model: Optional[str] = None  # default: "<experiment>-model"


@dataclass
class PromotionConfig:
    # paired: a challenger replaces the champion only when, on the validation rows both are scored on, the primary
    # metric improves with its paired interval excluding zero and no task is worse than its margin (docs/mlflow.md,
    # "Promotion"); margin: the candidate's recorded val_score beats the champion's by at least `margin`
    rule: str = "paired"
    metric: str = "val_score"  # validation: what selects the run's best candidate (both rules) and the margin rule
    margin: float = 0.0        # the margin rule's
    primary: str = "auc"       # paired: "<metric>" (the first task's) or "<task>/<metric>"; auc, gauc, ece, calibration
    guardrails: list = field(default_factory=lambda: ["auc"])  # paired: metrics no task may lose beyond its margin
    margins: dict = field(default_factory=dict)  # paired: "<task>/<metric>" or "<metric>" -> margin (default 0.002)
    level: float = 0.05        # paired: 1 - the intervals' confidence


@dataclass
class ResourcesConfig:
    gpus: int = 0
    accelerator_type: str = "nvidia.com/gpu"
    cpu: str = "2"
    memory: str = "8Gi"
    shm_size: str = "1Gi"
    retries: int = 2


@dataclass
class SecretsConfig:
    mlflow: Optional[str] = "mlflow-credentials"  # keys MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
    database: Optional[str] = "optuna-db"  # key OPTUNA_STORAGE: the study database URL with its password


@dataclass
class PipelineConfig:
    name: str = "mtlp-default"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    # "all" (every zoo model), {"exclude": [...]} (every one but those) or a list of names; always a list of names
    # once constructed (select_models), so the rest of the pipeline never sees the other forms
    models: object = "all"
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    image: Optional[str] = None  # None: pipeline.image.default_image()

    def __post_init__(self) -> None:
        self.models = select_models(self.models)

    def validate(self) -> "PipelineConfig":
        known = zoo.names()
        if not self.models:
            raise ConfigError("models: choose at least one of " + ", ".join(known))
        for m in self.models:
            if m not in known:
                raise ConfigError(f"models: unknown model {m!r}; choose from {known}")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models: listed twice: {self.models}")
        for key in ("search.n_trials", "search.n_epoch", "search.n_workers", "train.n_epoch"):
            section, attr = key.split(".")
            if getattr(getattr(self, section), attr) < 1:
                raise ConfigError(f"{key} must be >= 1")
        for b in self.train.baselines:
            if b not in BASELINES:
                raise ConfigError(f"train.baselines: unknown baseline {b!r}; choose from {list(BASELINES)}")
        if self.search.pruner not in ("median", "hyperband", "none"):
            raise ConfigError(f"search.pruner must be median, hyperband or none, got {self.search.pruner!r}")
        for key in ("timeout", "trial_timeout", "max_params"):
            value = getattr(self.search, key)
            if value is not None and not value > 0:
                raise ConfigError(f"search.{key} must be > 0 (or left out: no bound), got {value!r}")
        if not 0.0 < self.dataset.val_fraction < 1.0:
            raise ConfigError("dataset.val_fraction must be in (0, 1)")
        self._validate_promotion()
        if self.resources.gpus < 0 or self.resources.retries < 0:
            raise ConfigError("resources.gpus and resources.retries must be >= 0")
        for key, per_model, extra in (("search.space", self.search.space, {"common"}),
                                      ("train.params", self.train.params, set())):
            unknown = set(per_model) - set(known) - extra
            if unknown:
                raise ConfigError(f"{key}: unknown models {sorted(unknown)}; choose from {known}")
        if not is_validation_metric(self.promotion.metric):
            raise ConfigError(f"promotion.metric must be a validation metric (val_score, the one candidates record), "
                              f"got {self.promotion.metric!r}: the test split is reported, never selected on")
        for key, url in (("search.storage", self.search.storage), ("tracking.uri", self.tracking.uri)):
            if url and "://" in url and urllib.parse.urlsplit(url).password:
                # the config travels as KFP pipeline parameters: a password here shows in the KFP UI and YAML
                fix = ("write `env:VARIABLE` here and put the URL in that environment variable, or leave it empty "
                       "and set OPTUNA_STORAGE" if key == "search.storage" else
                       "leave it empty and set MLFLOW_TRACKING_URI (MLFLOW_TRACKING_USERNAME / _PASSWORD for a server)")
                raise ConfigError(f"{key} carries a password, which would show in the KFP UI and the compiled "
                                  f"pipeline: {fix} (a Kubernetes Secret on a cluster)")
        return self

    def _validate_promotion(self) -> None:
        from workflow.registry.rule import RULE_METRICS, RULES

        p = self.promotion
        if p.rule not in RULES:
            raise ConfigError(f"promotion.rule must be one of {list(RULES)}, got {p.rule!r}")
        if not 0.0 < p.level < 0.5:
            raise ConfigError(f"promotion.level must be in (0, 0.5), got {p.level!r}")
        for key, names in (("promotion.primary", [p.primary.rpartition("/")[2]]),
                           ("promotion.guardrails", list(p.guardrails)),
                           ("promotion.margins", [k.rpartition("/")[2] for k in p.margins])):
            unknown = [n for n in names if n not in RULE_METRICS]
            if unknown:
                raise ConfigError(f"{key}: unknown metric(s) {unknown}; choose from {list(RULE_METRICS)}")
        for key, value in p.margins.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"promotion.margins.{key} must be a number >= 0, got {value!r}")

    @property
    def registered_model(self) -> str:
        return self.tracking.registered_model or f"{self.tracking.experiment}-model"


def select_models(models: object) -> list:
    """The config's ``models`` as names: ``"all"`` is every model in the zoo, in ``zoo.names()`` order (so a model
    added to ``mtl_models/zoo.py`` runs without a config edit); ``{"exclude": [...]}`` every model but those (a
    config that leaves one out on purpose, e.g. ESMM on data that is no funnel); a list is taken as written."""
    if isinstance(models, str):
        if models != "all":
            raise ConfigError(f"models must be a list of model names, 'all' or {{exclude: [...]}}, got {models!r}")
        return zoo.names()
    if isinstance(models, Mapping):
        if set(models) != {"exclude"} or not isinstance(models["exclude"], list):
            raise ConfigError(f"models: a mapping takes one key, exclude: [names]; got {dict(models)!r}")
        known = zoo.names()
        unknown = [m for m in models["exclude"] if m not in known]
        if unknown:
            raise ConfigError(f"models.exclude: unknown model(s) {unknown}; choose from {known}")
        return [m for m in known if m not in models["exclude"]]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"models must be a list of model names, 'all' or {{exclude: [...]}}, got {models!r}")
    return list(models)


def is_validation_metric(metric: str) -> bool:
    """Whether ``metric`` is scored on the validation split (``val_score``, ``val_*``, ``val/...``)."""
    return str(metric).startswith(("val_", "val/"))


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in sorted(unknown))}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint, key = hints[name], f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        elif not _type_ok(value, hint):
            expected = getattr(hint, "__name__", str(hint))
            raise ConfigError(f"{key} must be {expected}, got {type(value).__name__} {value!r}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(source: Union[str, Path, Mapping[str, Any], None] = None) -> PipelineConfig:
    """Read a YAML file (default: configs/default.yaml) or a dict into a validated ``PipelineConfig``."""
    if source is None:
        source = DEFAULT_CONFIG
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        _paths_beside(data, path.parent)
    return _build(PipelineConfig, data, "").validate()


def _paths_beside(data: Any, folder: Path) -> None:
    """Relative ``dataset.data_dir``, ``dataset.options.path`` and ``.schema`` name files beside the config file:
    each becomes that absolute path when it exists there; one that exists only from the current folder (as configs
    written before this rule mean it) stays as written. The prepare step's errors name the absolute path tried."""
    dataset = data.get("dataset") if isinstance(data, Mapping) else None
    if not isinstance(dataset, dict):
        return
    options = dataset.get("options") if isinstance(dataset.get("options"), dict) else {}
    for holder, key in ((dataset, "data_dir"), (options, "path"), (options, "schema")):
        value = holder.get(key)
        if not isinstance(value, str) or not value or "://" in value or Path(value).expanduser().is_absolute():
            continue
        beside = folder / value
        if beside.exists() or not Path(value).exists():
            holder[key] = str(beside.resolve())


def config_to_dict(config: PipelineConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
