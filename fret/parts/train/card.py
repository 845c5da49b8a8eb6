"""What a trained model folder says about itself: fret_training.json and a README.md model card."""
from __future__ import annotations

import json
from pathlib import Path

from fret.parts.formatting import Formatting, from_record


def versions() -> dict:
    import sentence_transformers
    import torch
    import transformers

    import fret

    return {"fret": fret.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__}


def training_record(base_model: str, settings: dict, lineage: list[dict], steps: int, dim: int,
                    pooling: str, losses: list[float], fingerprint: str, formatting: Formatting) -> dict:
    dims = settings["matryoshka_dims"] or [dim]
    return {"base_model": base_model, "embedding_dim": dim, "matryoshka_dims": dims,
            "pooling": pooling, "steps": steps, "settings": settings, "data": lineage,
            "fingerprint": fingerprint, "final_loss": losses[-1] if losses else None,
            "formatting": formatting.to_dict(),
            "versions": versions()}


def _lineage_lines(lineage: list[dict]) -> list[str]:
    lines = []
    for src in lineage:
        line = f"- `{src['path']}` ({src['kind']}, weight {src['weight']}): {src['rows']} rows, {src['used']} examples used"
        if src.get("dropped"):
            line += f"; dropped {src['dropped']}"
        lines.append(line)
        if src.get("manifest"):
            lines.append(f"  - run manifest: `{json.dumps(src['manifest'], sort_keys=True)}`")
        else:
            lines.append("  - no run manifest (_manifest.json) in this folder")
    return lines


def _usage_lines(record: dict) -> list[str]:
    """How to encode queries and documents the way the model was trained."""
    f = from_record(record)
    lines = ["## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             'model = SentenceTransformer("PATH_TO_THIS_FOLDER")']
    if f is None or f.style == "plain":
        lines += ['queries = model.encode(["how do rainbows form?"])',
                  'documents = model.encode(["A rainbow is an optical phenomenon ..."])', "```", "",
                  "Trained on plain text: no prefixes or instructions.", ""]
        return lines
    lines += ['queries = model.encode_query(["how do rainbows form?"])  # prompt "query"',
              'documents = model.encode_document(["A rainbow is an optical phenomenon ..."])  # prompt "document"',
              "```", "", f"Inputs were formatted as `{f.query}` (queries and symmetric targets) and "
              f"`{f.document}` (documents); the saved prompts are these prefixes:", ""]
    lines += [f"- `{name}`: `{prefix!r}`" for name, prefix in f.st_prompts().items()]
    if f.style == "gecko":
        lines += ["", f"The default task (`query`) is the most frequent task of the training data: "
                  f"`{f.default_task}`. For another task pass `prompt=\"task: YOUR TASK | query: \"`; "
                  "documents with a title are best encoded as `title: TITLE | text: TEXT` (the prompt "
                  "says `title: none`)."]
    return lines + [""]


def model_card(record: dict) -> str:
    s = record["settings"]
    lines = [
        "---", "library_name: sentence-transformers", "tags: [sentence-transformers, fret, feature-extraction]", "---",
        "", "# Embedding model trained with fret", "",
        f"Fine-tuned from `{record['base_model']}` with fret's Gecko contrastive loss "
        f"({s['mode']}, {record['steps']} steps). Load it with "
        "`sentence_transformers.SentenceTransformer(path)`; embeddings are normalised (cosine).", "",
        f"- embedding dimension: {record['embedding_dim']}, pooling: {record['pooling']}",
        f"- Matryoshka dimensions: {record['matryoshka_dims']} (truncate with `truncate_dim=`, then re-normalise)",
        f"- final training loss: {record['final_loss']}", "",
    ]
    lines += _usage_lines(record)
    lines += ["## Training data", "", *_lineage_lines(record["data"]), "",
              "## Training settings", "", "```json", json.dumps(s, indent=2, sort_keys=True), "```", "",
              "## Versions", "", *(f"- {k}: {v}" for k, v in record["versions"].items()), ""]
    return "\n".join(lines)


def read(output: Path) -> dict | None:
    """The fret_training.json of a finished training in `output`, or None."""
    path = output / "fret_training.json"
    return json.loads(path.read_text()) if path.exists() else None


def write(output: Path, record: dict) -> None:
    (output / "fret_training.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (output / "README.md").write_text(model_card(record))
