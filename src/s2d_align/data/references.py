"""Stage-2 reference reports: the prior study of the same patient, or the nearest training study by image.

Paper, Stage 2: the reference report comes "from a different study of the
same patient" — serial radiographs of one person share anatomy, and their
reports differ by the interval change the model must learn to see. We take
the most recent *earlier* study (StudyDate/StudyTime order; MIMIC study ids
are random and carry no order), which is also what a radiologist would have
at hand.

IU X-Ray has no patient linkage (each report is its own patient), and some
MIMIC studies have no earlier study. There the reference is *retrieved*: the
nearest training study by cosine similarity of frozen image embeddings
(:meth:`VisionEncoder.embed`), never the study itself nor another study of the
same patient. A training study only
ever gets a training reference; validation and test studies also draw from
the training set, which is allowed as a source (``data.leakage`` checks it).

Embedding a few thousand radiographs with Rad-DINO on a CPU takes a while, so
vectors are cached on disk (:class:`EmbeddingCache`), keyed by model, path,
size and modification time, and a rerun only embeds what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from s2d_align.data.images import ImageError, load_image
from s2d_align.data.manifest import Study
from s2d_align.data.views import is_frontal


# --------------------------------------------------------------------------- prior study


def prior_study_references(studies: Sequence[Study]) -> dict[str, str | None]:
    """Each study's reference: the same patient's most recent strictly earlier study, or None.

    Studies without a time cannot be ordered and neither get nor give a
    reference. A training study only takes a training study (splits are
    patient-disjoint, so this only matters when that check was bypassed).
    """
    by_subject: dict[str, list[Study]] = defaultdict(list)
    for study in studies:
        if study.study_time is not None:
            by_subject[study.subject_id].append(study)
    references: dict[str, str | None] = {s.id: None for s in studies}
    for group in by_subject.values():
        group.sort(key=lambda s: (s.study_time, s.id))
        for index, study in enumerate(group):
            for earlier in reversed(group[:index]):
                if earlier.study_time >= study.study_time:  # same instant: not earlier
                    continue
                if study.split == "train" and earlier.split != "train":
                    continue
                references[study.id] = earlier.id
                break
    return references


# --------------------------------------------------------------------------- retrieval


def nearest_training_references(
    ids: Sequence[str], splits: Sequence[str], subjects: Sequence[str], vectors: np.ndarray, chunk: int = 1024
) -> dict[str, str | None]:
    """For every study, the most similar (L2-normalised vectors) training study of *another* patient.

    Never the study itself, nor another study of its patient: a retrieved
    reference stands in for a prior study where there is none, and a later
    study of the same patient would be a look at that patient's future.
    Rows of ``vectors`` that are all zero (studies whose images could not be
    embedded) neither get nor give a reference.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    valid = np.linalg.norm(vectors, axis=1) > 0
    train = np.flatnonzero(np.array([s == "train" for s in splits]) & valid)
    patient = np.unique(np.asarray(subjects, dtype=str), return_inverse=True)[1].reshape(-1)  # subject -> integer
    references: dict[str, str | None] = {i: None for i in ids}
    if len(train) == 0:
        return references
    bank = vectors[train]  # (T, d)
    for start in range(0, len(ids), chunk):
        rows = np.arange(start, min(start + chunk, len(ids)))
        scores = vectors[rows] @ bank.T  # (c, T)
        scores[rows[:, None] == train[None, :]] = -np.inf  # never the study itself
        scores[patient[rows][:, None] == patient[train][None, :]] = -np.inf  # nor its patient's other studies
        best = scores.argmax(axis=1)
        for row, column in zip(rows, best):
            if valid[row] and np.isfinite(scores[row - start, column]):
                references[ids[row]] = ids[train[column]]
    return references


def representative_image(study: Study) -> list[int]:
    """Indices of the images that stand for a study: its first frontal view, else all of them."""
    for index, view in enumerate(study.views):
        if is_frontal(view):
            return [index]
    return list(range(len(study.images)))


def embed_studies(
    studies: Sequence[Study],
    resolve: Callable[[str], Path],
    model: str,
    cache_path: Path,
    batch_size: int = 16,
    trust_remote_code: bool = False,
    device: str = "cpu",
) -> tuple[np.ndarray, list[str]]:
    """One L2-normalised vector per study (frontal image, or the mean of its images); zeros where none loads.

    Returns the vectors and the ids of studies none of whose images could be embedded.
    """
    cache = EmbeddingCache(cache_path, model)
    wanted: dict[str, Path] = {}
    for study in studies:
        for index in representative_image(study):
            path = resolve(study.images[index])
            wanted.setdefault(cache.key(path), path)
    missing = [(key, path) for key, path in wanted.items() if key not in cache]
    if missing:
        _embed_into(cache, missing, model, batch_size, trust_remote_code, device)
    vectors = np.zeros((len(studies), cache.dim or 1), dtype=np.float32)
    failed = []
    for row, study in enumerate(studies):
        found = [cache.get(cache.key(resolve(study.images[i]))) for i in representative_image(study)]
        found = [v for v in found if v is not None]
        if not found:
            failed.append(study.id)
            continue
        mean = np.mean(found, axis=0)
        vectors[row] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return vectors, failed


def _embed_into(
    cache: "EmbeddingCache",
    items: list[tuple[str, Path]],
    model: str,
    batch_size: int,
    trust_remote_code: bool,
    device: str,
) -> None:
    import torch

    from s2d_align.models.vision import load_vision_encoder

    encoder, preprocess = load_vision_encoder(model, trust_remote_code=trust_remote_code, key="--vision-model")
    encoder.to(device)
    progress = tqdm(total=len(items), desc="embedding images", unit="img")
    since_save = 0
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        images, keys = [], []
        for key, path in batch:
            try:
                images.append(load_image(path))
                keys.append(key)
            except ImageError:
                cache.put_failure(key)
        if images:
            with torch.inference_mode():
                vectors = encoder.embed(preprocess(images).to(device)).cpu().numpy()
            for key, vector in zip(keys, vectors):
                cache.put(key, vector)
        progress.update(len(batch))
        since_save += len(batch)
        if since_save >= 512:
            cache.save()
            since_save = 0
    progress.close()
    cache.save()


class EmbeddingCache:
    """Image vectors of one model on disk (``.npz``), written atomically so a crash loses at most one chunk."""

    def __init__(self, path: Path, model: str):
        self.path = Path(path)
        self.model = model
        self._vectors: dict[str, np.ndarray | None] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as data:
                keys = json.loads(str(data["keys"]))
                for key, vector in zip(keys, data["vectors"]):
                    self._vectors[key] = vector
                for key in json.loads(str(data["failed"])):
                    self._vectors[key] = None

    def key(self, path: Path) -> str:
        try:
            stat = os.stat(path)
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        return hashlib.sha256(f"{self.model}|{Path(path).resolve()}|{stamp}".encode()).hexdigest()

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    @property
    def dim(self) -> int | None:
        return next((len(v) for v in self._vectors.values() if v is not None), None)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def put(self, key: str, vector: np.ndarray) -> None:
        self._vectors[key] = np.asarray(vector, dtype=np.float32)

    def put_failure(self, key: str) -> None:
        self._vectors[key] = None

    def save(self) -> None:
        good = [(k, v) for k, v in self._vectors.items() if v is not None]
        vectors = np.stack([v for _, v in good]) if good else np.zeros((0, 1), dtype=np.float32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(
            temporary,
            keys=np.array(json.dumps([k for k, _ in good])),
            failed=np.array(json.dumps([k for k, v in self._vectors.items() if v is None])),
            vectors=vectors,
        )
        os.replace(temporary, self.path)


def cache_file(out: Path, model: str) -> Path:
    """Where the embeddings of ``model`` for a dataset built in ``out`` are cached."""
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(model).name)[:60]
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return Path(out) / "cache" / f"embeddings-{slug}-{digest}.npz"


def retrieval_references(
    studies: Sequence[Study],
    resolve: Callable[[str], Path],
    model: str,
    out: Path,
    batch_size: int = 16,
    trust_remote_code: bool = False,
    device: str = "cpu",
) -> tuple[dict[str, str | None], list[str]]:
    """Nearest-training-study references for ``studies``; also the ids that could not be embedded."""
    vectors, failed = embed_studies(
        studies, resolve, model, cache_file(out, model), batch_size=batch_size,
        trust_remote_code=trust_remote_code, device=device,
    )
    references = nearest_training_references(
        [s.id for s in studies], [s.split for s in studies], [s.subject_id for s in studies], vectors
    )
    return references, failed
