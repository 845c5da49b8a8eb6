"""The training loop: data -> batches -> gradient-cached steps -> checkpoints -> a saved model.

`train(...)` is what `fret train` runs. Under torchrun every rank calls it; each takes its slice
of every global batch, and the loss is computed over the embeddings gathered from all ranks.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from fret.core.errors import ConfigError
from fret.core.records import stable_id
from fret.parts import formatting as fmt
from fret.parts.bundled import resolve_embedder
from fret.parts.train import card, checkpoint, dist
from fret.parts.train.batching import auto_batch_size, plan_epoch
from fret.parts.train.data import DataSource, Example, Pair, format_examples, load_data, task_summary
from fret.parts.train.gradcache import cached_step, plain_step
from fret.parts.train.loss import GeckoLoss, text_ids
from fret.parts.train.settings import TrainSettings

# The formatting `format: auto` picks for a base model with no prompts of its own: the best one on
# benchmarks/bench_finetune.py (held-out XQuAD-es, bundled MiniLM: `query: `/`passage: ` prefixes
# 84.54 nDCG@10, plain 84.19, Gecko 83.71; see benchmarks/README.md).
AUTO_FORMAT = "prompts"

# settings that do not change what is trained, so changing them does not invalidate checkpoints
NOT_IN_FINGERPRINT = ("checkpoint_every", "keep_checkpoints", "device", "max_steps", "epochs")


def pick_device(settings: TrainSettings) -> tuple[torch.device, bool]:
    """(device, bf16 autocast?) from the settings and what is present."""
    use_cuda = settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    bf16 = settings.precision == "bf16" or (settings.precision == "auto" and use_cuda)
    return device, bf16


def free_memory(device: torch.device) -> int:
    """Bytes free on the device (CUDA) or in RAM (CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def resolve_formatting(settings: TrainSettings, base: str, pairs: list[Pair]) -> fmt.Formatting:
    """The formatting to train with, from the settings, the base model's own prompts and the data."""
    own = fmt.model_prompts(Path(base)) if Path(base).is_dir() else None
    style = settings.format
    if style == "auto":
        style = "prompts" if own is not None else AUTO_FORMAT
    if style == "plain":
        return fmt.PLAIN
    if style == "gecko":
        top, by_type = task_summary(pairs)
        return fmt.gecko(settings.default_task or top, by_type)
    own_query, own_doc = (own.format_query(""), own.format_document("")) if own else (None, None)
    query = settings.query_prompt if settings.query_prompt is not None else own_query
    document = settings.document_prompt if settings.document_prompt is not None else own_doc
    return fmt.prefixes(fmt.E5_QUERY_PREFIX if query is None else query,
                        fmt.E5_DOCUMENT_PREFIX if document is None else document)


def batch_texts(examples: list[Example], k: int) -> tuple[list[str], int, torch.Tensor]:
    """Texts to embed (queries, positives, then negatives) and where each example's negatives sit.

    Returns (texts, b, neg_pos) with neg_pos (b, k) indexing into texts, -1 where missing.
    """
    b = len(examples)
    texts = [e.query for e in examples] + [e.positive for e in examples]
    neg_pos = torch.full((b, k), -1, dtype=torch.long)
    for i, e in enumerate(examples):
        for j, neg in enumerate(e.negatives[:k]):
            neg_pos[i, j] = len(texts)
            texts.append(neg)
    return texts, b, neg_pos


def make_loss_of(loss_fn: GeckoLoss, texts: list[str], b: int, neg_pos: torch.Tensor, device: torch.device):
    """Closure from the local embeddings (N, d) to the global loss (gathered over ranks)."""
    ids = text_ids(texts).to(device)  # (N,)
    neg_pos = neg_pos.to(device)  # (b, K)
    valid = neg_pos >= 0  # (b, K)
    safe = neg_pos.clamp(min=0)  # (b, K)
    q_ids, p_ids = dist.gather(ids[:b]), dist.gather(ids[b:2 * b])  # (B,)
    n_ids = dist.gather(torch.where(valid, ids[safe], torch.full_like(safe, -1)))  # (B, K)
    n_valid = dist.gather(valid)  # (B, K)

    def loss_of(emb: torch.Tensor) -> torch.Tensor:
        q = dist.gather_with_grad(emb[:b])  # (B, d)
        p = dist.gather_with_grad(emb[b:2 * b])  # (B, d)
        n = None
        if neg_pos.shape[1] > 0:
            n = dist.gather_with_grad(emb[safe] * valid.unsqueeze(-1))  # (B, K, d)
        return loss_fn(q, p, n, n_valid, q_ids, p_ids, n_ids)

    return loss_of


def fingerprint(settings: TrainSettings, model: str, lineage: list[dict], world_size: int) -> str:
    kept = {k: v for k, v in settings.model_dump().items() if k not in NOT_IN_FINGERPRINT}
    data = [(d["path"], d["rows"], d["weight"]) for d in lineage]
    return stable_id(kept, model, data, world_size, prefix="train-")


def log(msg: str) -> None:
    if dist.world()[0] == 0:
        print(msg, file=sys.stderr, flush=True)


def train(sources: list[DataSource], model: str, output: Path, settings: TrainSettings,
          restart: bool = False, on_step: Optional[Callable[[int, float], None]] = None) -> Path:
    """Fine-tune `model` on the data and save a sentence-transformers folder at `output`."""
    from fret.parts.train.model import Encoder, save_sentence_transformer

    device, bf16 = pick_device(settings)
    dist.init_from_env(device.type)
    rank, size = dist.world()
    torch.manual_seed(settings.seed)
    data = load_data(sources, settings.negatives_used, settings.seed)
    base = resolve_embedder(model, "--model")
    formatting = resolve_formatting(settings, base, data.pairs)
    log(f"fret train: formatting {formatting.describe()}")
    examples = format_examples(data.pairs, formatting)
    loss_fn = GeckoLoss(settings.temperature, settings.same_tower_used,
                        settings.matryoshka_dims, settings.matryoshka_weights, settings.mask_siblings)

    def load_encoder() -> Encoder:
        loaded = Encoder(base, settings.pooling, settings.max_length).to(device)
        loaded.train()
        return loaded

    encoder = None  # loaded after every check that does not need it
    batch_size = settings.batch_size
    if batch_size == "auto":  # pre-finetuning: the largest batch that fits
        encoder = load_encoder()
        batch_size = auto_batch_size(len(examples), encoder.dim, max(1, len(settings.matryoshka_dims)),
                                     settings.negatives_used, free_memory(device), size)
        log(f"fret train: batch_size auto -> {batch_size}")
    plan_args = dict(batch_size=batch_size, seed=settings.seed,
                     one_source_per_batch=settings.one_source_per_batch,
                     group_by_length=settings.group_by_length, multiple_of=size)
    per_epoch = len(plan_epoch(examples, epoch=0, **plan_args))
    if per_epoch == 0:
        raise ConfigError(f"no complete batch: fewer examples per source ({len(examples)} in all) "
                          f"than batch_size ({batch_size}); lower it with --set batch_size=N")
    total = settings.max_steps if settings.max_steps is not None else settings.epochs * per_epoch
    run_id = fingerprint(settings, base, data.lineage, size)
    finished = None if restart else card.read(output)
    if finished is not None:
        if finished.get("fingerprint") == run_id and finished.get("steps") == total:
            log(f"fret train: {output} already holds this training ({total} steps); --restart trains again")
            return output
        raise ConfigError(f"{output} holds a finished training with other settings, data or steps "
                          f"({finished.get('steps')} steps, fingerprint {finished.get('fingerprint')}); "
                          f"run the same command with --restart to replace it, or give another --output")
    encoder = encoder or load_encoder()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = settings.warmup_steps or round(settings.warmup_ratio * total)
    warm = max(warmup, 1)  # linear warm-up to lr over `warmup` steps, then linear decay to 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warmup))))

    ckpt_root = output / "checkpoints"
    if restart and rank == 0:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    dist.barrier()
    step = 0
    found = checkpoint.latest(ckpt_root)
    if found is not None:
        step = checkpoint.load(found, run_id, encoder.model, optimizer, scheduler)
        log(f"fret train: resuming from {found} (step {step} of {total})")
    step_fn = cached_step if settings.gradient_cache else plain_step
    losses: list[float] = []
    plan, plan_epoch_no = [], -1
    from fret.core.progress import Progress

    # a live bar on a terminal, periodic lines with the time left in a log (rank 0 only)
    bar = Progress(total, "fret train", unit="step", initial=step, enabled=rank == 0)
    while step < total:
        epoch, index = divmod(step, per_epoch)
        if epoch != plan_epoch_no:
            plan, plan_epoch_no = plan_epoch(examples, epoch=epoch, **plan_args), epoch
        batch = plan[index]
        per_rank = len(batch) // size
        local = [examples[i] for i in batch[rank * per_rank:(rank + 1) * per_rank]]
        texts, b, neg_pos = batch_texts(local, settings.negatives_used)
        loss_of = make_loss_of(loss_fn, texts, b, neg_pos, device)
        chunk = settings.mini_batch_size if settings.gradient_cache else len(texts)
        loss = step_fn(encoder, texts, loss_of, device, chunk, bf16)
        dist.sum_gradients(encoder.parameters())
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(loss)
        bar.update(1, note=f"loss {loss:.4f} lr {scheduler.get_last_lr()[0]:.2e}")
        if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < total:
            checkpoint.save(ckpt_root, step, run_id, settings.model_dump(), encoder.model, optimizer,
                            scheduler, settings.keep_checkpoints)
        if on_step is not None:
            on_step(step, loss)
    bar.close()

    if rank == 0:
        encoder.eval()
        save_sentence_transformer(encoder, output, formatting.st_prompts())
        record = card.training_record(base, settings.model_dump(), data.lineage, step, encoder.dim,
                                      encoder.pooling, losses, run_id, formatting)
        card.write(output, record)
        shutil.rmtree(ckpt_root, ignore_errors=True)
    dist.barrier()
    return output
