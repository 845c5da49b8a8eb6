"""MultiLongDoc's optional hard negatives: FRet's `embed` and `mine` stages, run over the long
documents (`longdocs`) and the questions (`questions`) instead of `corpus` and `queries`."""
from __future__ import annotations

from ..shared.embed import EmbedStage
from ..shared.mine import MineStage


class LongDocEmbedStage(EmbedStage):
    input = "longdocs"


class LongDocMineStage(MineStage):
    input = "questions"
