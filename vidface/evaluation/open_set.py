"""Choosing the open-set match threshold from a gallery alone (never from the clips scored later).

A face is named after the gallery person whose best photo is most similar,
if that similarity reaches the threshold. Calibrating on photo *pairs* (1 % of
different-person pairs let through) understates how often a stranger gets
named: the matcher takes the best of every photo of every person, so a
stranger's top score is the maximum of many impostor pairs. This module plays
the matcher's own game on the gallery, leave-one-out:

- a *known* query: one photo, matched against the gallery without that photo;
  right if its own person comes out on top and reaches the threshold;
- an *unknown* query: one photo, matched against the gallery without its whole
  person, as a stranger would be; rejected if the top score stays below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OpenSetScores:
    """Leave-one-out answers of a gallery to its own photos.

    known_top: ``(K,)`` top person similarity of each photo whose person has
        other photos; known_right: ``(K,)`` whether that top person is its own.
    unknown_top: ``(U,)`` top similarity of each photo with its person removed.
    """

    known_top: np.ndarray
    known_right: np.ndarray
    unknown_top: np.ndarray

    def named_right(self, threshold: float) -> float:
        """Share of known queries named after their own person at ``threshold``."""
        if len(self.known_top) == 0:
            return float("nan")
        return float((self.known_right & (self.known_top >= threshold)).mean())

    def unknown_rejected(self, threshold: float) -> float:
        """Share of unknown queries left unnamed at ``threshold``."""
        if len(self.unknown_top) == 0:
            return float("nan")
        return float((self.unknown_top < threshold).mean())


def open_set_scores(embeddings: np.ndarray, owners: np.ndarray) -> OpenSetScores:
    """Leave-one-out scores of gallery photos: ``(M, D)`` unit embeddings, ``(M,)`` person index of each."""
    embeddings = np.asarray(embeddings, np.float32)
    owners = np.asarray(owners, np.int64)
    photos, people = len(owners), int(owners.max()) + 1 if len(owners) else 0
    similarity = (embeddings @ embeddings.T).astype(np.float64)
    np.fill_diagonal(similarity, -np.inf)  # a photo never matches itself
    rows = np.arange(photos)
    # best photo of each person for each query: (M, P), -inf where a person has no other photo
    best = np.full((photos, people), -np.inf)
    np.maximum.at(best, (rows[:, None], owners[None, :]), similarity)
    has_other_photo = np.bincount(owners, minlength=people)[owners] > 1
    known = best[has_other_photo]
    without_own = best.copy()
    without_own[rows, owners] = -np.inf
    return OpenSetScores(known.max(axis=1), known.argmax(axis=1) == owners[has_other_photo],
                         without_own.max(axis=1) if people > 1 else np.zeros(0))


def choose_threshold(scores: OpenSetScores, max_unknown_named: float | None = None) -> float:
    """The open-set threshold.

    Default: the one that maximises the mean of the named-right and
    unknown-rejected shares (knowns and strangers weigh the same); among equals,
    the highest, since leaving a face unknown is the safer mistake. With
    ``max_unknown_named``: the lowest threshold that names at most that share of
    unknown queries.
    """
    candidates = np.unique(np.concatenate([scores.known_top, scores.unknown_top, [1.0]]))
    candidates = np.minimum(candidates + 1e-4, 1.0)
    if len(scores.unknown_top) == 0:
        raise ValueError("an open-set threshold needs a gallery of at least two people")
    if max_unknown_named is not None:
        allowed = [t for t in candidates if 1 - scores.unknown_rejected(t) <= max_unknown_named]
        return float(min(allowed))
    if len(scores.known_top) == 0:
        raise ValueError("an open-set threshold needs a person with at least two usable photos")
    balanced = np.array([scores.named_right(t) + scores.unknown_rejected(t) for t in candidates])
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    return float(candidates[best[-1]])


def open_set_histogram(scores: OpenSetScores, threshold: float, png, title: str = "gallery, leave-one-out"):
    """PNG of the top similarity of known queries (right and wrong person) and of unknown ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path

    png = Path(png)
    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(-0.5, 1.0, 61)
    axis.hist(scores.unknown_top, bins=bins, alpha=0.6, label=f"stranger's top score ({len(scores.unknown_top)})")
    axis.hist(scores.known_top[scores.known_right], bins=bins, alpha=0.6,
              label=f"own person on top ({int(scores.known_right.sum())})")
    axis.hist(scores.known_top[~scores.known_right], bins=bins, alpha=0.6,
              label=f"someone else on top ({int((~scores.known_right).sum())})")
    axis.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.2f}")
    axis.set_xlabel("top person similarity (cosine, best photo)")
    axis.set_ylabel("photos")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
