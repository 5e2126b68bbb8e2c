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
    observed = np.concatenate([scores.known_top, scores.unknown_top])
    # a threshold nothing reaches: 1.0 for cosine, above every score on other scales (cohort-normalised)
    ceiling = max(1.0, float(observed.max(initial=0.0)) + 1e-4)
    candidates = np.unique(np.concatenate([np.minimum(observed + 1e-4, ceiling), [ceiling]]))
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


def cohort_statistics(person_photos: list[np.ndarray], cohort: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per person, mean and spread of the best-photo similarity of ``cohort`` ``(C, D)`` strangers' faces.

    person_photos: one ``(M_p, D)`` array of unit embeddings per gallery person.
    Returns ``mu (P,)`` and ``sigma (P,)``: a score ``s`` to person ``p`` reads
    as ``(s - mu[p]) / sigma[p]`` strangers' spreads above what strangers get.
    """
    best = np.stack([(cohort @ photos.T).max(axis=1) for photos in person_photos], axis=1)
    return best.mean(axis=0), best.std(axis=0).clip(1e-6)


def pseudo_track(embeddings: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``(D,)`` unit mean of the crops ``indices`` of ``embeddings``: what a track of those faces averages."""
    mean = embeddings[indices].mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


@dataclass
class PseudoTrackScores:
    """Track-level open-set answers on synthetic galleries built from identity-labelled crops.

    Every query is the mean of ``track_size`` crops of one person (a pseudo-track).
    known_*: queries of gallery people (their crops not in the gallery);
    unknown_*: queries of people left out of the gallery. ``*_top`` is the top
    person score: raw best-photo cosine, or cohort-normalised when asked.
    """

    known_top: np.ndarray
    known_right: np.ndarray
    unknown_top: np.ndarray

    def as_open_set(self) -> OpenSetScores:
        return OpenSetScores(self.known_top, self.known_right, self.unknown_top)


def pseudo_track_scores(embeddings: np.ndarray, owners: np.ndarray, people: np.ndarray, *, gallery_people: int = 10,
                        gallery_photos: int = 8, track_size: int = 4, splits: int = 50, seed: int = 0,
                        cohort: np.ndarray | None = None) -> PseudoTrackScores:
    """Play the pipeline's matcher on synthetic galleries drawn from ``people`` (indices into ``owners``' ids).

    embeddings: ``(N, D)`` unit embeddings of labelled crops; owners: ``(N,)``
    person id of each. Each split draws ``gallery_people`` of ``people`` as the
    gallery (``gallery_photos`` photos each, one pseudo-track of ``track_size``
    other crops each as a known query); every other person of ``people``
    gives one pseudo-track as a stranger. With ``cohort`` ``(C, D)``, scores
    are cohort-normalised per gallery person (:func:`cohort_statistics`).
    """
    embeddings = np.asarray(embeddings, np.float32)
    rng = np.random.default_rng(seed)
    crops_of = {int(p): np.flatnonzero(owners == p) for p in people}
    usable = [p for p in crops_of if len(crops_of[p]) >= gallery_photos + track_size]
    if len(usable) <= gallery_people:
        raise ValueError(f"pseudo-tracks need more than {gallery_people} people with "
                         f"{gallery_photos + track_size} crops; have {len(usable)}")

    known_top, known_right, unknown_top = [], [], []
    for _ in range(splits):
        chosen = rng.choice(usable, gallery_people, replace=False)
        photos, queries = [], []
        for person in chosen:
            order = rng.permutation(crops_of[person])
            photos.append(embeddings[order[:gallery_photos]])
            queries.append(pseudo_track(embeddings, order[gallery_photos : gallery_photos + track_size]))
        strangers = [pseudo_track(embeddings, rng.permutation(crops_of[p])[:track_size])
                     for p in crops_of if p not in set(chosen) and len(crops_of[p]) >= track_size]
        known, unknown = np.stack(queries), np.stack(strangers)
        known_scores = np.stack([(known @ p.T).max(axis=1) for p in photos], axis=1)
        unknown_scores = np.stack([(unknown @ p.T).max(axis=1) for p in photos], axis=1)
        if cohort is not None:
            mu, sigma = cohort_statistics(photos, cohort)
            known_scores, unknown_scores = (known_scores - mu) / sigma, (unknown_scores - mu) / sigma
        known_top.append(known_scores.max(axis=1))
        known_right.append(known_scores.argmax(axis=1) == np.arange(gallery_people))
        unknown_top.append(unknown_scores.max(axis=1))
    return PseudoTrackScores(np.concatenate(known_top), np.concatenate(known_right), np.concatenate(unknown_top))


def balanced_accuracy(scores: OpenSetScores, threshold: float) -> float:
    """Mean of the named-right and strangers-rejected shares at ``threshold``."""
    return (scores.named_right(threshold) + scores.unknown_rejected(threshold)) / 2


@dataclass
class RuleReport:
    """One decision rule on the held-out people: threshold chosen on one half, scored on the other."""

    rule: str
    threshold: float
    cross_balanced: float
    named_right: float
    unknown_rejected: float
    own_on_top: float


def compare_rules(embeddings: np.ndarray, owners: np.ndarray, cohort: np.ndarray, *, track_size: int = 4,
                  splits: int = 50, seed: int = 0, **gallery) -> list[RuleReport]:
    """Plain cosine threshold against cohort normalisation, on pseudo-tracks of held-out people.

    People are split in two halves: each half chooses its threshold
    (:func:`choose_threshold`) on its own synthetic galleries and is scored on
    the other half's; ``cross_balanced`` is the mean of both. The reported
    threshold and shares are those of all people together.
    """
    people = np.unique(owners)
    halves = np.array_split(np.random.default_rng(seed).permutation(people), 2)
    reports = []
    for rule, rule_cohort in (("cosine", None), ("cohort", cohort)):
        def scores_of(chosen, split_seed):
            return pseudo_track_scores(embeddings, owners, chosen, track_size=track_size, splits=splits,
                                       seed=split_seed, cohort=rule_cohort, **gallery).as_open_set()

        crossed = []
        for first, second in ((0, 1), (1, 0)):
            threshold = choose_threshold(scores_of(halves[first], seed + 1))
            crossed.append(balanced_accuracy(scores_of(halves[second], seed + 2), threshold))
        everyone = scores_of(people, seed + 3)
        threshold = choose_threshold(everyone)
        reports.append(RuleReport(rule, round(threshold, 4), round(float(np.mean(crossed)), 4),
                                  round(everyone.named_right(threshold), 4),
                                  round(everyone.unknown_rejected(threshold), 4),
                                  round(float(everyone.known_right.mean()), 4)))
    return reports


def link_threshold(embeddings: np.ndarray, owners: np.ndarray, track_size: int = 4, draws: int = 5,
                   seed: int = 0) -> float:
    """The track-to-track similarity above which two tracks are one person (``link_threshold``).

    The people's crops are dealt into pseudo-tracks of ``track_size`` (the mean of as
    many unit embeddings); the threshold is the similarity of the most alike pair of
    different people's pseudo-tracks, averaged over ``draws`` deals: a pair of tracks
    meeting it looks more alike than any two different people held out of training.
    """
    embeddings = np.asarray(embeddings, np.float32)
    owners = np.asarray(owners)
    rng = np.random.default_rng(seed)
    highest = []
    for _ in range(draws):
        means, people = [], []
        for person in np.unique(owners):
            rows = rng.permutation(np.flatnonzero(owners == person))
            for start in range(0, len(rows) - track_size + 1, track_size):
                means.append(pseudo_track(embeddings, rows[start:start + track_size]))
                people.append(person)
        if len(set(people)) < 2:
            raise ValueError(f"a link threshold needs at least two people with {track_size} crops each")
        means, people = np.array(means), np.array(people)
        similarity = means @ means.T
        similarity[people[:, None] == people[None, :]] = -np.inf
        highest.append(float(similarity.max()))
    return float(np.mean(highest))


def photo_check_threshold(embeddings: np.ndarray, owners: np.ndarray, photos_per_person: int = 10,
                          share: float = 0.005, draws: int = 5, seed: int = 0) -> float:
    """The best-own-photo similarity under which a gallery photo is reported as unlike its person
    (``photo_check_threshold``).

    Galleries of ``photos_per_person`` photos are drawn from each person's crops, ``draws`` times; each
    photo's best similarity to the other photos of its person is taken, and the threshold is the
    ``share`` quantile of them: that share of genuine photos is reported, while a photo of someone else
    filed under a person reaches only that person's best impostor score.
    """
    from ...gallery import best_other_similarity

    embeddings = np.asarray(embeddings, np.float32)
    owners = np.asarray(owners)
    rng = np.random.default_rng(seed)
    best_own = []
    for _ in range(draws):
        for person in np.unique(owners):
            rows = np.flatnonzero(owners == person)
            if len(rows) < 2:
                continue
            best_own.extend(best_other_similarity(
                embeddings[rng.choice(rows, min(photos_per_person, len(rows)), replace=False)]))
    if not best_own:
        raise ValueError("a photo check threshold needs a person with at least two crops")
    return float(np.quantile(best_own, share))


def impostor_photo_scores(embeddings: np.ndarray, owners: np.ndarray, photos_per_person: int = 10,
                          seed: int = 0) -> np.ndarray:
    """Per crop, its best similarity to a ``photos_per_person``-photo gallery of another person drawn at
    random: what a photo of someone else filed under that person scores against them."""
    embeddings = np.asarray(embeddings, np.float32)
    owners = np.asarray(owners)
    rng = np.random.default_rng(seed)
    people = np.unique(owners)
    if len(people) < 2:
        return np.zeros(0)
    galleries = {p: embeddings[rng.choice(np.flatnonzero(owners == p), min(photos_per_person, int((owners == p).sum())),
                                          replace=False)] for p in people}
    scores = []
    for row, owner in enumerate(owners):
        other = rng.choice(people[people != owner])
        scores.append(float((galleries[other] @ embeddings[row]).max()))
    return np.array(scores)
