"""TrainConfig: the `train:` section of a preset, overridable from the command line.

Schema (key names are a contract; presets for 7B models are written against them)::

    train:
      data: benchmarks/data/train/wordnet_train.jsonl
      data_limit: null         # only the first N rows (small-subset runs); null = all
      zero_stage: 2            # 2 | 3
      offload: false           # optimizer state on CPU (ZeRO-3 only)
      steps: 30
      warmup_steps: 3
      lr: 1.0e-3
      head_lr: null            # the pooling head's peak learning rate; null = lr
      weight_decay: 0.01
      batch_size: 16           # contrastive batch: queries across ALL ranks per micro-step
      chunk_size: null         # GradCache sub-batch (texts per re-forward); null/0 = no GradCache
      group_rows: 16           # texts per forward pass, sorted by length (less padding); null/0 = one
                               # padded pass over the whole batch
      grad_accum: 1            # contrastive batches per optimizer step (adds no negatives)
      max_length: 64
      temperature: 0.05
      negatives_per_query: 1
      grad_clip: 1.0
      gradient_checkpointing: false
      precision: auto          # auto (bf16 on GPU or a CPU with bf16 units, else fp32) | bf16 | fp32
      seed: 0
      save_every: 10
      lora: {r: 16, alpha: 32, dropout: 0.1}
      mixture: null            # a list of sources replacing `data` (toolchain/train/mixture.py)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.modeling.lora import LoraSettings
from toolchain.paths import project_root
from toolchain.train.mixture import MixtureSource, parse_mixture

DEFAULT_DATA = "benchmarks/data/train/wordnet_train.jsonl"
ZERO_STAGES = (2, 3)
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """Every value that shapes a training run. Defaults: the paper's recipe at toy scale."""

    # metadata: "help" (flag help and README), "flag" (a legacy flag name; default --field-name),
    # "choices", "fields" (help per field of a nested dataclass: one flag each, --lora-r),
    # "preset_only" (no flag). toolchain/train/settings.py turns them into flags.
    data: str = field(default=DEFAULT_DATA, metadata={
        "help": "training JSONL (in a preset relative to the repository, on the command line to "
                "the working directory); replaces the preset's mixture"})
    data_limit: int | None = field(default=None, metadata={"help": "use only the first N rows"})
    zero_stage: int = field(default=2, metadata={"help": "DeepSpeed ZeRO stage: 2 or 3",
                                                 "flag": "--zero"})
    offload: bool = field(default=False, metadata={
        "help": "optimizer state on CPU (ZeRO-3 only)"})
    steps: int = field(default=30, metadata={"help": "optimizer steps"})
    warmup_steps: int = field(default=3, metadata={
        "help": "linear warm-up steps, then linear decay", "flag": "--warmup"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    head_lr: float | None = field(default=None, metadata={
        "help": "peak learning rate of the pooling head (null = lr)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (matrices only)"})
    batch_size: int = field(default=16, metadata={
        "help": "contrastive batch: queries across all ranks per micro-step"})
    chunk_size: int | None = field(default=None, metadata={
        "help": "GradCache chunk (texts per re-forward); 0 / null = off"})
    group_rows: int | None = field(default=16, metadata={
        "help": "texts per forward pass, sorted by length; 0 / null = one padded pass"})
    grad_accum: int = field(default=1, metadata={
        "help": "contrastive batches per optimizer step (adds no negatives)"})
    max_length: int = field(default=64, metadata={"help": "tokens per text, EOS included"})
    temperature: float = field(default=0.05, metadata={"help": "InfoNCE temperature on cosine"})
    negatives_per_query: int = field(default=1, metadata={"help": "hard negatives per query",
                                                          "flag": "--negatives"})
    grad_clip: float = field(default=1.0, metadata={"help": "global gradient-norm clip (0 = off)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in backward"})
    precision: str = field(default="auto", metadata={
        "help": "auto: bf16 on a GPU or a CPU with bf16 units (AMX / AVX512-BF16), else fp32",
        "choices": PRECISIONS})
    seed: int = field(default=0, metadata={"help": "seed of head init, data order and dropout"})
    data_seed: int | None = field(default=None, metadata={
        "help": "seed of data order and dropout only (null = seed): runs that differ here share "
                "their initialisation, so their weights average (poolattn soup)"})
    save_every: int = field(default=10, metadata={"help": "checkpoint every N steps (0 = only final)"})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={
        "help": "LoRA on the backbone", "fields": {
            "r": {"help": "LoRA rank"},
            "alpha": {"help": "LoRA alpha (the update is scaled by alpha / r)"},
            "dropout": {"help": "dropout on the LoRA input"},
            "target_modules": {"help": "backbone projections that get LoRA, comma-separated"}}})
    mixture: list[MixtureSource] | None = field(default=None, metadata={
        "help": "training sources, each batch from one (replaces data; see "
                "toolchain/train/mixture.py)", "preset_only": True})

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = _lora_from_dict(self.lora)
        if self.mixture is not None:
            self.mixture = parse_mixture(self.mixture, "train.mixture")
        for name in ("chunk_size", "group_rows"):  # 0: the command line's way to say "off"
            if getattr(self, name) == 0:
                setattr(self, name, None)
        if self.zero_stage not in ZERO_STAGES:
            raise ToolchainError(f"train.zero_stage: unknown ZeRO stage {self.zero_stage!r}; "
                                 f"known: {', '.join(map(str, ZERO_STAGES))}")
        if self.offload and self.zero_stage != 3:
            raise ToolchainError("train.offload: optimizer offload needs ZeRO-3 (it ships as "
                                 "zero3_offload.json); use zero_stage 3")
        if self.precision not in PRECISIONS:
            raise ToolchainError(f"train.precision: {self.precision!r} not one of {PRECISIONS}")
        for name in ("steps", "batch_size", "grad_accum", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ToolchainError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if self.data_limit is not None and self.data_limit < 2:
            raise ToolchainError(f"train.data_limit: must be >= 2 or null, got {self.data_limit}")
        for name in ("warmup_steps", "negatives_per_query", "save_every"):
            if int(getattr(self, name)) < 0:
                raise ToolchainError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("chunk_size", "group_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ToolchainError(f"train.{name}: must be >= 1 or null, got {getattr(self, name)}")
        if self.max_length < 2:
            raise ToolchainError("train.max_length: must be >= 2 (content + EOS)")
        if not self.lr > 0 or not self.temperature > 0 or (self.head_lr is not None
                                                            and not self.head_lr > 0):
            raise ToolchainError("train.lr, train.head_lr and train.temperature must be > 0")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ToolchainError("train.grad_clip and train.weight_decay must be >= 0")
        if not 0 <= self.lora.dropout < 1 or self.lora.r < 1:
            raise ToolchainError("train.lora: need r >= 1 and 0 <= dropout < 1")

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "train") -> "TrainConfig":
        """Build from a preset's ``train:`` mapping; unknown keys and wrong types are errors."""
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ToolchainError(f"{where}: unknown key(s) {unknown}; known: {', '.join(known)}")
        values = {}
        for name, value in data.items():
            # lora and mixture are validated in __post_init__ (errors get ``where`` below)
            values[name] = value if name in ("lora", "mixture") else _coerce(
                name, value, known[name].type, where)
        if "lora" in values and not isinstance(values["lora"], (dict, LoraSettings)):
            raise ToolchainError(f"{where}: lora must be a mapping {{r, alpha, dropout}}")
        try:
            return cls(**values)
        except ToolchainError as err:
            raise ToolchainError(f"{where}: {err}") from None

    def with_overrides(self, **overrides) -> "TrainConfig":
        """A copy with the non-None overrides applied (CLI flags); validates again. A ``lora``
        mapping updates the current LoRA settings key by key (``lora={"r": 8}`` keeps alpha)."""
        data = self.to_dict()
        data.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(overrides.get("lora"), dict):
            data["lora"] = {**asdict(self.lora), **overrides["lora"]}
        if overrides.get("data") is not None and overrides.get("mixture") is None:
            data["mixture"] = None  # a data file on the command line replaces the mixture
        return TrainConfig.from_dict(data, where="command line")

    def to_dict(self) -> dict:
        return asdict(self)

    def data_path(self) -> Path:
        path = Path(self.data)
        return path if path.is_absolute() else project_root() / path

    def sources(self) -> list[MixtureSource]:
        """The mixture, or the single ``data`` file as a mixture of one."""
        if self.mixture:
            return list(self.mixture)
        return [MixtureSource(name=Path(self.data).stem, data=str(self.data_path()),
                              limit=self.data_limit, dedupe=False)]

    @property
    def order_seed(self) -> int:
        """The seed of data order and dropout."""
        return self.seed if self.data_seed is None else self.data_seed

    def resolved_precision(self, on_gpu: bool) -> str:
        """``auto``: bf16 on a GPU or a CPU with native bf16 (AVX512-BF16 / AMX), else fp32."""
        if self.precision == "auto":
            from toolchain.cpu import cpu_has_bf16

            return "bf16" if on_gpu or cpu_has_bf16() else "fp32"
        return self.precision


def _coerce(name: str, value, type_name, where: str):
    """YAML/CLI values to the field's type, naming the field when they do not fit."""
    text = str(type_name)
    if value is None:
        if "None" in text:
            return None
        raise ToolchainError(f"{where}: {name} must not be null")
    try:
        if text.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if text.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if text.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if text.startswith("str"):
            if not isinstance(value, (str, Path)):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ToolchainError(f"{where}: {name} must be {text}, got {value!r}")


def _lora_from_dict(data: dict) -> LoraSettings:
    known = {"r", "alpha", "dropout", "target_modules"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ToolchainError(f"train.lora: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return LoraSettings(**{**asdict(LoraSettings()), **data})
    except TypeError as err:
        raise ToolchainError(f"train.lora: {err}") from None


def config_for_preset(preset, **overrides) -> TrainConfig:
    """The preset's ``train:`` section (defaults where absent) with CLI overrides applied."""
    where = f"{preset.path or preset.name}: train"
    section = preset.sections.get("train")
    if section is not None and not isinstance(section, dict):
        raise ToolchainError(f"{where}: must be a mapping")
    return TrainConfig.from_dict(section, where=where).with_overrides(**overrides)
