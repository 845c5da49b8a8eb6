"""Training settings: one pydantic model, overridable from the command line with `--set key=value`.

Saved next to every checkpoint and inside the output model folder (fret_training.json).
"""
from __future__ import annotations

from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from fret.core.errors import ConfigError


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["finetune", "prefinetune"] = "finetune"  # prefinetune: in-batch negatives only
    epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many optimizer steps (overrides epochs)
    batch_size: Union[int, Literal["auto"]] = 64  # global batch (all ranks); auto: the largest that fits
    gradient_cache: bool = True
    mini_batch_size: int = 32  # texts per forward pass when gradient caching
    lr: float = 5e-5  # with warmup_ratio 0.1: the best of 2e-5, 5e-5, 1e-4 on bench_finetune.py
    weight_decay: float = 0.01
    warmup_steps: int = 0  # linear warm-up steps; 0: warmup_ratio of the total steps
    warmup_ratio: float = 0.1
    max_grad_norm: Optional[float] = 1.0
    temperature: float = 0.05  # E5-mistral used 0.02; 0.05 matches MiniLM's pre-training scale of 20
    hard_negatives: int = 1  # at most this many hard negatives per example
    same_tower: bool = True  # query-query negatives (j != i), as in Gecko
    mask_siblings: bool = True  # same-tower: queries sharing a positive are not negatives of each other
    matryoshka_dims: list[int] = []  # e.g. [384, 256, 128, 64]; empty: full dimension only
    matryoshka_weights: list[float] = []  # empty: 1.0 each
    pooling: Literal["auto", "mean", "cls", "lasttoken"] = "auto"  # auto: the model's own, else mean
    max_length: int = 256  # tokens per text
    # How texts are formatted (fret.parts.formatting): gecko (task: ... | query: ...), prompts (query_prompt /
    # document_prompt, or the base model's own), plain; auto: the base model's own prompts where it
    # has them, else AUTO_FORMAT (prompts), the best of the three on benchmarks/bench_finetune.py.
    format: Literal["auto", "gecko", "prompts", "plain"] = "auto"
    query_prompt: Optional[str] = None  # prompts: e.g. 'query: ' (default: the model's own, else 'query: ')
    document_prompt: Optional[str] = None  # prompts: e.g. 'passage: ' (default: the model's own, else 'passage: ')
    default_task: Optional[str] = None  # gecko: the task recorded for inputs without one (default: most frequent)
    one_source_per_batch: bool = False
    group_by_length: bool = False  # length-sorted batches: less padding, but batches of one paragraph's siblings (bench_finetune.py)
    seed: int = 0
    checkpoint_every: int = 500  # optimizer steps; 0 disables
    keep_checkpoints: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU

    @field_validator("format", mode="before")
    @classmethod
    def _format_bool(cls, value):
        """Older settings said format: true/false (Gecko or nothing)."""
        if isinstance(value, bool):
            return "gecko" if value else "plain"
        return value

    @model_validator(mode="after")
    def _check(self) -> "TrainSettings":
        problems = []
        if (self.batch_size != "auto" and self.batch_size < 1) or self.mini_batch_size < 1:
            problems.append("batch_size and mini_batch_size must be >= 1")
        if self.temperature <= 0:
            problems.append("temperature must be > 0")
        if self.matryoshka_weights and len(self.matryoshka_weights) != len(self.matryoshka_dims):
            problems.append("matryoshka_weights must have one weight per matryoshka_dims entry")
        counts = ("epochs", "max_length", "keep_checkpoints") + (("max_steps",) if self.max_steps is not None else ())
        for key in counts:
            if getattr(self, key) < 1:
                problems.append(f"{key} must be >= 1 (got {getattr(self, key)})")
        for key in ("hard_negatives", "checkpoint_every", "warmup_steps", "weight_decay"):
            if getattr(self, key) < 0:
                problems.append(f"{key} must be >= 0 (got {getattr(self, key)})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if any(d < 1 for d in self.matryoshka_dims):
            problems.append(f"matryoshka_dims must be >= 1 (got {self.matryoshka_dims})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def negatives_used(self) -> int:
        return 0 if self.mode == "prefinetune" else self.hard_negatives

    @property
    def same_tower_used(self) -> bool:
        return self.same_tower and self.mode == "finetune"


class SettingsError(ConfigError):
    """One line per offending key (exit 2)."""


def _parse_value(raw: str, is_list: bool, is_text: bool = False):
    """'384,256' -> [384, 256] for list fields; '0.02' -> 0.02; 'true' -> True; 'abc' -> 'abc'.

    Text fields keep the raw string ('query: ' stays a prefix, not a YAML mapping), except 'null'.
    """
    if is_list and not raw.strip().startswith("["):
        return [yaml.safe_load(part) for part in raw.split(",") if part.strip()]
    value = yaml.safe_load(raw) if raw.strip() else raw
    return raw if is_text and value is not None and not isinstance(value, str) else value


def apply_overrides(pairs: list[str], base: Optional[dict] = None) -> TrainSettings:
    """apply_overrides(['temperature=0.02']) -> TrainSettings(temperature=0.02, ...); every bad
    `--set` is reported at once, one line each."""
    values, problems = dict(base or {}), []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep:
            problems.append(f"--set {pair!r}: expected key=value")
            continue
        field = TrainSettings.model_fields.get(key)
        if field is None:
            known = ", ".join(TrainSettings.model_fields)
            problems.append(f"--set {key}: unknown training setting (known: {known})")
            continue
        kind = str(field.annotation)
        try:
            values[key] = _parse_value(raw, "list" in kind, kind in ("Optional[str]", "typing.Optional[str]"))
        except yaml.YAMLError:
            problems.append(f"--set {pair}: not a value (YAML)")
    if problems:
        raise SettingsError("\n".join(problems))
    try:
        return TrainSettings.model_validate(values)
    except ValidationError as err:
        lines, by_key = [], {}
        for e in err.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["loc"]:  # a union (batch_size: a number or 'auto') gives one error per member
                by_key.setdefault(e["loc"][0], (e.get("input"), []))[1].append(msg)
            else:  # checks across settings: one line each, naming the setting
                lines.extend(f"training setting {part}" for part in msg.split("; "))
        lines = [f"--set {key}: {'; or '.join(msgs)} (got {got!r})" for key, (got, msgs) in by_key.items()] + lines
        raise SettingsError("\n".join(lines)) from None
