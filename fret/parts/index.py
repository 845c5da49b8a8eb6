"""FAISS inner-product index over corpus vectors: exact for small corpora, IVF or HNSW past a size.

With normalized vectors inner product is cosine similarity. `kind="auto"` searches exactly up to
`exact_max` vectors and builds `approximate` above it. Flat and IVF indexes move to the GPU when
faiss was built with GPU support and a GPU is visible (HNSW has no FAISS GPU version and stays on
the CPU). Results are deterministic: IVF k-means is seeded, and HNSW is built single-threaded
unless `deterministic=False` (its parallel insertion order depends on thread timing).
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_SEARCH_BATCH = 4096  # queries per FAISS call, to bound the (nq, k) scratch memory


class IndexSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    exact_max: int = Field(200_000, ge=0)  # auto: exact search up to this many vectors
    approximate: Literal["ivf", "hnsw"] = "hnsw"
    nlist: Optional[int] = Field(None, ge=1)  # IVF lists; None: about 4 * sqrt(n)
    nprobe: int = Field(32, ge=1)
    hnsw_m: int = Field(32, ge=2)
    ef_construction: int = Field(80, ge=1)
    ef_search: int = Field(128, ge=1)
    use_gpu: Union[Literal["auto"], bool] = "auto"
    deterministic: bool = True
    seed: int = 1234


def resolve_kind(n: int, settings: IndexSettings) -> str:
    """resolve_kind(1000, IndexSettings()) -> 'flat'; past exact_max -> settings.approximate."""
    if settings.kind != "auto":
        return settings.kind
    return "flat" if n <= settings.exact_max else settings.approximate


def default_nlist(n: int, nlist: Optional[int]) -> int:
    """default_nlist(10_000, None) -> 400, capped so each list gets >= 39 training points."""
    want = nlist or int(round(4 * math.sqrt(n)))
    return max(1, min(want, n // 39 if n >= 39 else 1))


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """A built FAISS index; `search` returns (scores, indices) best first."""

    def __init__(self, index, kind: str, on_gpu: bool, gpu_resources=None):
        self.index = index
        self.kind = kind
        self.on_gpu = on_gpu
        self._gpu_resources = gpu_resources  # must outlive the GPU index
        self.ntotal = int(index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (nq, k') float32, indices (nq, k') int64) with k' = min(k, ntotal).

        An approximate index can find fewer than k' vectors for a query (IVF with few probed
        lists): those slots hold index -1 and score -inf, always at the end of the row.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)  # (nq, dim)
        k = min(int(k), self.ntotal)
        nq = queries.shape[0]
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        indices = np.full((nq, k), -1, dtype=np.int64)
        if k <= 0 or nq == 0:
            return scores, indices
        for lo in range(0, nq, _SEARCH_BATCH):
            s, i = self.index.search(queries[lo:lo + _SEARCH_BATCH], k)  # (b, k) each
            scores[lo:lo + len(s)] = np.where(i >= 0, s, -np.inf)
            indices[lo:lo + len(i)] = i
        return scores, indices


def _build_cpu(vectors: np.ndarray, kind: str, settings: IndexSettings):
    import faiss

    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, default_nlist(n, settings.nlist),
                                   faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = settings.seed
        index.cp.spherical = True  # centroids on the sphere, like the normalized vectors
        index.train(vectors)
        index.nprobe = min(settings.nprobe, index.nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
    else:
        raise ValueError(f"unknown index kind {kind!r}: use flat, ivf or hnsw")
    if kind == "hnsw" and settings.deterministic:
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            index.add(vectors)
        finally:
            faiss.omp_set_num_threads(threads)
    else:
        index.add(vectors)
    return index


def build_index(vectors: np.ndarray, settings: Optional[IndexSettings] = None) -> VectorIndex:
    """Index (n, dim) vectors for inner-product search, on the GPU where asked and possible."""
    settings = settings or IndexSettings()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, dim)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"build_index needs a non-empty (n, dim) array, got shape {vectors.shape}")
    kind = resolve_kind(len(vectors), settings)
    index = _build_cpu(vectors, kind, settings)
    want_gpu = settings.use_gpu is True or (settings.use_gpu == "auto" and kind != "hnsw")
    if want_gpu and not gpu_available():
        if settings.use_gpu is True:
            raise RuntimeError("use_gpu=true but faiss has no GPU support or sees no GPU "
                               "(install faiss-gpu and check CUDA_VISIBLE_DEVICES)")
        want_gpu = False
    if want_gpu and kind == "hnsw":
        raise ValueError("FAISS has no GPU HNSW index: use kind=ivf or flat, or use_gpu=false")
    if not want_gpu:
        return VectorIndex(index, kind, on_gpu=False)
    import faiss

    res = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
    if kind == "ivf":  # GPU IVF takes nprobe through the parameter space (up to 2048)
        faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", index.nprobe)
    return VectorIndex(gpu_index, kind, on_gpu=True, gpu_resources=res)
