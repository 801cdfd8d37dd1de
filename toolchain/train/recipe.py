"""The training recipe: LoRA + trainable pooling head, InfoNCE, DeepSpeed ZeRO (torchtune style).

``TrainRecipe(...)`` only validates (bad input fails here and writes nothing), ``setup()`` builds
the model and the engine, ``train()`` runs the loop, ``save_checkpoint()`` writes a step.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from toolchain.atomic import write_json_atomic
from toolchain.errors import ToolchainError
from toolchain.modeling import build_embedding_model, resolve_variant
from toolchain.modeling.lora import apply_lora
from toolchain.paths import runs_dir
from toolchain.presets import Preset, load_preset
from toolchain.tokenization import TextTokenizer
from toolchain.train import checkpoint as ckpt
from toolchain.train.batches import Batch
from toolchain.train.buckets import StepChunks, step_chunks
from toolchain.train.mixture import MixturePlan, load_sources
from toolchain.train.config import TrainConfig
from toolchain.train.ds_config import ds_config_path, resolve_ds_config
from toolchain.train.gradcache import backward_from_cache, embed_without_graph
from toolchain.train.loss import global_mean, info_nce, world
from toolchain.train.runtime import (attention_kernel, check_max_length, max_positions,
                                     peak_memory_mb)
from toolchain.train.rundir import ResumePlan, clear_run, plan_resume, truncate_metrics

# Testing hook: SIGKILL every rank right after this step's metrics/checkpoint (resume tests).
KILL_ENV = "POOLATTN_TRAIN_SIGKILL_AT_STEP"


@dataclass
class StepResult:
    loss: float  # mean over ranks and accumulated batches
    tokens: int  # non-padding tokens embedded, all ranks
    positions: int  # positions the forward passes computed (tokens + padding), all ranks
    candidates: int  # logits width: every rank's positives and negatives


def linear_schedule(step: int, warmup: int, total: int) -> float:
    """LR factor for 0-based ``step``: linear warm-up to 1, then linear decay; never 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(total - step, 1) / max(total - warmup, 1)


class TrainRecipe:
    """One training run of one variant.

    Args:
        preset: preset name, path or Preset.
        config: the resolved TrainConfig.
        variant: m1..m5 (or None with ``pooling`` and ``attention``).
        run_dir: default runs/<preset>/<variant>.
        resume: continue from the run directory's last checkpoint when it has one.
        world_size: ranks the run will have (default: the launcher's WORLD_SIZE, else 1).

    Raises:
        ToolchainError: unknown variant / ZeRO stage, missing or malformed data, a batch that
            does not split over the ranks, max_length beyond the model, an incompatible resume.
    """

    def __init__(self, preset: str | Path | Preset, config: TrainConfig, variant: str | None = None,
                 pooling: str | None = None, attention: str | None = None,
                 run_dir: Path | None = None, resume: bool = True,
                 world_size: int | None = None) -> None:
        self.preset = preset if isinstance(preset, Preset) else load_preset(preset)
        self.variant = resolve_variant(variant, pooling, attention)
        self.config = config
        from toolchain.train.launch import launched_world_size

        self.world_size = world_size or launched_world_size()
        self.run_dir = Path(run_dir) if run_dir else runs_dir() / self.preset.name / self.variant.name
        self.sources = load_sources(config.sources())
        MixturePlan(self.sources, config.batch_size, config.negatives_per_query, config.order_seed,
                    0, self.world_size)  # raises on a batch that does not fit
        check_max_length(config.max_length, max_positions(self.preset), f"preset {self.preset.name}")
        ds_config_path(config)  # a stage/offload pair without a shipped file fails here
        self.record = {**config.to_dict(), "preset": self.preset.name, **self.variant.fields(),
                       "world_size": self.world_size,
                       "source_rows": {s.name: len(rows) for s, rows in self.sources}}
        self.resume_plan: ResumePlan = plan_resume(self.run_dir, self.record, resume)
        self.losses: list[float] = []

    @property
    def complete(self) -> bool:
        return self.resume_plan.complete

    def setup(self) -> None:
        """Build model, LoRA and engine; restore a checkpoint when resuming."""
        import deepspeed

        from toolchain.train.launch import init_distributed, quiet_warnings

        quiet_warnings()
        cfg = self.config
        self.rank, world_size, self.device = init_distributed()
        if world_size != self.world_size:
            raise ToolchainError(f"launcher started {world_size} ranks, expected {self.world_size}")
        on_gpu = self.device.type == "cuda"
        self.precision = cfg.resolved_precision(on_gpu)
        model = build_embedding_model(self.preset, self.variant, head_seed=cfg.seed)
        check_max_length(cfg.max_length, getattr(model.backbone.config, "max_position_embeddings", None),
                         f"preset {self.preset.name}")
        model.tokenizer = TextTokenizer(model.tokenizer.tokenizer, cfg.max_length,
                                        self.preset.padding_side)
        if cfg.gradient_checkpointing:  # non-reentrant: works with frozen inputs and ZeRO-3
            model.backbone.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(cfg.seed)  # LoRA A init
        apply_lora(model, cfg.lora)
        model.train()
        self.model = model
        self.plan = MixturePlan(self.sources, cfg.batch_size, cfg.negatives_per_query, cfg.order_seed,
                                self.rank, world_size)
        micro_batch, micro_steps = self._micro_layout()
        self.ds_config = resolve_ds_config(cfg, world_size=world_size, micro_batch=micro_batch,
                                           micro_steps=micro_steps,
                                           hidden_size=model.backbone.config.hidden_size,
                                           on_gpu=on_gpu)
        schedule = partial(linear_schedule, warmup=cfg.warmup_steps, total=cfg.steps)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=self._param_groups(), config=self.ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule))
        self._open_run_dir()

    def _micro_layout(self) -> tuple[int, int]:
        """(texts or queries per engine micro-step, engine micro-steps per optimizer step)."""
        cfg = self.config
        if cfg.chunk_size is None:
            return self.plan.local, cfg.grad_accum
        texts = self.plan.local * (2 + cfg.negatives_per_query)
        return cfg.chunk_size, cfg.grad_accum * math.ceil(texts / cfg.chunk_size)

    def _param_groups(self) -> list[dict]:
        """LoRA at ``lr``, the head at ``head_lr``; weight decay on matrices (LoRA, projections,
        latents), none on 1-D norms and biases. Empty groups are left out (ZeRO refuses them)."""
        cfg, groups = self.config, []
        for module, lr in ((self.model.backbone, cfg.lr), (self.model.head, cfg.head_lr or cfg.lr)):
            trainable = [p for p in module.parameters() if p.requires_grad]
            groups += [{"params": [p for p in trainable if p.ndim >= 2], "lr": lr,
                        "weight_decay": cfg.weight_decay},
                       {"params": [p for p in trainable if p.ndim < 2], "lr": lr, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def _open_run_dir(self) -> None:
        plan, run_dir = self.resume_plan, self.run_dir
        self.start_step, self.elapsed_before = 0, 0.0
        if self.rank == 0:
            if plan.fresh:
                clear_run(run_dir)
            write_json_atomic(run_dir / "ds_config.json", self.ds_config)
            write_json_atomic(run_dir / "train_config.json", self.record)
        if plan.checkpoint is not None:
            state = ckpt.read_state(plan.checkpoint)
            ckpt.load_engine_state(self.engine, plan.checkpoint)
            ckpt.restore_rng(plan.checkpoint, self.rank)
            self.start_step, self.elapsed_before = int(state["step"]), float(state["elapsed_s"])
            if self.rank == 0:
                truncate_metrics(run_dir / "metrics.jsonl", self.start_step)
        else:
            torch.manual_seed(self.config.order_seed + 1 + 100_003 * self.rank)  # dropout stream

    def _embed(self, chunk: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.engine(chunk["input_ids"].to(self.device),
                           chunk["attention_mask"].to(self.device))

    def _tokenize(self, batch: Batch) -> StepChunks:
        """Forward chunks: GradCache's where it is on, else ``group_rows`` texts sorted by length."""
        cfg = self.config
        return step_chunks(self.model.tokenizer, batch.texts(), cfg.chunk_size or cfg.group_rows,
                           group_by_length=cfg.group_rows is not None)

    def _loss(self, embeddings: torch.Tensor, batch: Batch):
        n = len(batch.queries)  # rows: queries, positives, negatives (Batch.texts order)
        return info_nce(embeddings[:n], embeddings[n:2 * n], embeddings[2 * n:],
                        self.config.temperature)

    def accumulate(self, step: int) -> StepResult:
        """All forward/backward work of optimizer step ``step`` (0-based), leaving the final
        ``engine.step()`` (the accumulation boundary: reduce, clip, update) to the caller."""
        cfg, engine = self.config, self.engine
        losses, counts, width = [], torch.zeros(2, dtype=torch.float64), 0
        for a in range(cfg.grad_accum):
            batch = self.plan.batch(step * cfg.grad_accum + a)
            chunked = self._tokenize(batch)
            counts += torch.tensor([float(chunked.real_tokens), float(chunked.positions)])
            chunks = chunked.chunks
            last_batch = a == cfg.grad_accum - 1
            if cfg.chunk_size is None:
                embeddings = torch.cat([self._embed(chunk) for chunk in chunks])
                out = self._loss(chunked.restore(embeddings), batch)
                engine.backward(out.loss / cfg.grad_accum, scale_wrt_gas=False)
                if not last_batch:
                    engine.step()
            else:
                reps, states = embed_without_graph(self._embed, chunks)
                reps = reps.detach().requires_grad_()  # rows in chunk order
                out = self._loss(chunked.restore(reps), batch)
                out.loss.backward()  # d loss / d embedding, through the cross-rank gather

                def backward(surrogate: torch.Tensor, last_chunk: bool) -> None:
                    engine.backward(surrogate / cfg.grad_accum, scale_wrt_gas=False)
                    if not (last_chunk and last_batch):
                        engine.step()  # a non-boundary micro-step: gradients accumulate

                backward_from_cache(self._embed, chunks, states, reps.grad, backward)
            losses.append(out.loss.detach())
            width = out.logits.shape[1]
        if world()[1] > 1:
            torch.distributed.all_reduce(counts)
        return StepResult(global_mean(torch.stack(losses).mean()), int(counts[0]), int(counts[1]),
                          width)

    def train(self) -> list[float]:
        """Run the remaining steps; returns this process's per-step losses."""
        from tqdm import tqdm

        cfg, rank0 = self.config, self.rank == 0
        metrics = (self.run_dir / "metrics.jsonl").open("a") if rank0 else None
        bar = tqdm(total=cfg.steps, initial=self.start_step, disable=not rank0, unit="step",
                   desc=f"train {self.preset.name}/{self.variant.name}", file=sys.stderr)
        started = time.perf_counter()
        for step in range(self.start_step, cfg.steps):
            tick = time.perf_counter()
            lr = float(self.engine.get_lr()[0])
            # forwards and backwards alike: checkpointing recomputes layers inside backward,
            # and a recompute on another SDPA kernel saves other tensors (CheckpointError)
            with attention_kernel(self.device, self.precision):
                result = self.accumulate(step)
            self.engine.step()
            seconds = time.perf_counter() - tick
            self.losses.append(result.loss)
            norm = self.engine.get_global_grad_norm()
            row = {"step": step + 1, "loss": result.loss, "lr": lr,
                   "step_s": seconds,
                   "tokens_per_s": result.tokens / seconds,
                   "padding_fraction": 1.0 - result.tokens / result.positions,
                   **peak_memory_mb(self.device),
                   "elapsed_s": self.elapsed_before + time.perf_counter() - started,
                   "candidates": result.candidates,
                   "source": self.plan.source_name(step * cfg.grad_accum),
                   "precision": self.precision,
                   "grad_norm": None if norm is None else float(norm)}
            if rank0:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}",
                                tok_s=f"{row['tokens_per_s']:.0f}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                self.save_checkpoint(step + 1, row["elapsed_s"])
            if os.environ.get(KILL_ENV) == str(step + 1):
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        if metrics:
            metrics.close()
        self.save_checkpoint(cfg.steps, self.elapsed_before + time.perf_counter() - started,
                             final=True)
        return self.losses

    def save_checkpoint(self, step: int, elapsed_s: float, final: bool = False) -> Path:
        """checkpoints/step-<step>/ (with engine state), or final/ (without)."""
        target = self.run_dir / ("final" if final else f"checkpoints/step-{step}")
        state = {"step": step, "cursor": step * self.config.grad_accum * self.config.batch_size,
                 "world_size": self.world_size, "elapsed_s": elapsed_s}
        extra = {"step": step, "train": self.config.to_dict()}
        ckpt.save_run_checkpoint(self.engine, self.model, target, self.preset, self.config.lora,
                                 state, extra, with_engine=not final)
        return target

    def cleanup(self) -> None:
        """Release the engine (the process group stays for the process's lifetime)."""
        self.engine = None


def recipe_main(preset: str | Path | Preset, config: TrainConfig, **kwargs) -> list[float]:
    """Validate, set up, train and save one run; returns its losses (empty when complete)."""
    recipe = TrainRecipe(preset, config, **kwargs)
    if recipe.complete:
        print(f"{recipe.run_dir}: already trained ({config.steps} steps); --no-resume retrains",
              file=sys.stderr)
        return []
    recipe.setup()
    losses = recipe.train()
    recipe.cleanup()
    return losses
