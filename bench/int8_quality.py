"""How far the onnx-int8 engine's features are from the fp32 onnx engine's (issue 12 §3), and how fast it runs.

The metrics are pure numpy functions of two feature matrices (same images, same order) and the
labels, used by the bench on ../shared/data/fruits360-sample and by tests/job/test_int8.py on the
vendored fixture:

- cosine similarity of each image's int8 features to its fp32 features (min, median), and the
  same after removing the fp32 mean vector (centred), with the share of the images whose int8
  features are nearest to their own fp32 features (self_match; chance is 1/n);
- the share of images whose 10 nearest neighbours in PCA space are the same images for both
  engines (each engine standardized and PCA-projected on its own features, as the job does);
- a linear probe: multinomial logistic regression on the PCA features, trained on a split by
  image and scored on the held-out images, for int8 and for fp32 (the same split).

sklearn is not installed here, so the probe is a small full-batch gradient-descent logistic
regression (deterministic; no randomness once the split is drawn).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

NEIGHBOURS = 10
PCA_COMPONENTS = 50
TEST_SHARE = 0.3


def cosine_to_reference(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of `other` to `reference` (n, d) -> (n,)."""
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    return (reference * other).sum(axis=1) / np.maximum(norms, 1e-30)


def centred_cosine(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-row cosine after subtracting the reference's mean vector: the image-specific part only.

    With random calibrated weights ~90 % of a feature vector's energy is a vector common to every
    image, which the plain cosine rewards; this one measures what tells images apart.
    """
    mean = np.asarray(reference, np.float64).mean(axis=0)
    return cosine_to_reference(reference - mean, other - mean)


def self_match(reference: np.ndarray, other: np.ndarray) -> float:
    """Share of images whose `other` features are nearest (centred cosine) to their own `reference` features."""
    mean = np.asarray(reference, np.float64).mean(axis=0)
    a, b = reference - mean, other - mean
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
    return float(np.mean(np.argmax(b @ a.T, axis=1) == np.arange(len(a))))


def signal_share(features: np.ndarray) -> float:
    """Share of the features' energy that varies between images (the rest is their common mean vector)."""
    x = np.asarray(features, np.float64)
    return float(((x - x.mean(axis=0)) ** 2).sum() / (x**2).sum())


def pca_features(features: np.ndarray, k: int) -> np.ndarray:
    """Standardize, then project on the top-k principal components (numpy SVD): the job's reduction."""
    x = np.asarray(features, np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[: min(k, vt.shape[0])].T


def nearest_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each row's k nearest other rows (Euclidean), nearest first."""
    sq = (points**2).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2 * points @ points.T
    np.fill_diagonal(dist, np.inf)
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def neighbour_agreement(reference: np.ndarray, other: np.ndarray, k: int = NEIGHBOURS) -> dict[str, float]:
    """identical: share of images whose k nearest neighbours are the same set; overlap: mean shared share."""
    ref, oth = nearest_neighbours(reference, k), nearest_neighbours(other, k)
    shared = np.array([len(set(a) & set(b)) for a, b in zip(ref, oth, strict=True)])
    return {"identical": float(np.mean(shared == k)), "overlap": float(shared.mean() / k)}


def split_by_image(labels: Sequence[str], test_share: float = TEST_SHARE, seed: int = 0) -> np.ndarray:
    """A boolean test mask: `test_share` of each class's images (at least one when a class has 2+)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    test = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        take = max(1, round(len(rows) * test_share))
        test[rng.permutation(rows)[:take]] = True
    return test


def logistic_regression(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3, steps: int = 500, lr: float = 0.5
) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent; returns a predict(x) -> class ids."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = (x - mean) / std
    w, b = np.zeros((z.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(z)
        w -= lr * (z.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return lambda new: np.argmax(((new - mean) / std) @ w + b, axis=1)


def probe_accuracy(features: np.ndarray, labels: Sequence[str], test: np.ndarray) -> float:
    """Linear-probe accuracy on the held-out images (`test` mask) of a model trained on the others."""
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels])
    predict = logistic_regression(features[~test], y[~test], len(names))
    return float(np.mean(predict(features[test]) == y[test]))


def quality(
    fp32: np.ndarray, int8: np.ndarray, labels: Sequence[str], components: int = PCA_COMPONENTS, seed: int = 0
) -> dict:
    """Every metric of the module for one pair of feature matrices (rows: the same images)."""
    if fp32.shape != int8.shape or len(labels) != len(fp32):
        raise ValueError(f"shapes differ: fp32 {fp32.shape}, int8 {int8.shape}, {len(labels)} labels")
    cosine, centred = cosine_to_reference(fp32, int8), centred_cosine(fp32, int8)
    k = min(components, len(fp32) - 1)
    pca32, pca8 = pca_features(fp32, k), pca_features(int8, k)
    test = split_by_image(labels, seed=seed)
    agree = neighbour_agreement(pca32, pca8)
    return {
        "images": len(fp32),
        "classes": len(set(labels)),
        "cosine_min": float(cosine.min()),
        "cosine_median": float(np.median(cosine)),
        "centred_cosine_median": float(np.median(centred)),
        "fp32_signal_share": signal_share(fp32),
        "self_match": self_match(fp32, int8),
        "pca_components": k,
        "neighbours": NEIGHBOURS,
        "neighbours_identical": agree["identical"],
        "neighbours_overlap": agree["overlap"],
        "probe_test_images": int(test.sum()),
        "probe_accuracy_fp32": probe_accuracy(pca32, labels, test),
        "probe_accuracy_int8": probe_accuracy(pca8, labels, test),
    }
