"""Classification metrics from a confusion matrix and the predicted probabilities, with
scikit-learn's conventions.

Macro precision/recall/F1 average over the classes present in the true or predicted labels,
with 0 for a zero division; balanced accuracy averages recall over the classes present in the
true labels, so a majority-class predictor scores exactly 1/C on a test set holding all C classes.

Clinical metrics: per-class sensitivity is `recall/<class>`, per-class specificity
`specificity/<class>` (true negatives / negatives), `melanoma_sensitivity` the recall of a class
named mel or MEL; `auroc` is the macro one-vs-rest AUROC (scikit-learn's
`roc_auc_score(multi_class="ovr", average="macro")`, averaged over the classes that have
positives and negatives in the evaluated set), `ece` the expected calibration error of the
top-class confidence in 15 equal-width bins (Guo et al. 2017; bins as scikit-learn's
`calibration_curve`). The softmax probabilities of a pass are kept on the device batch by batch
(N x C floats) and read back once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.engine.batches import TensorData

ECE_BINS = 15
MELANOMA = ("mel", "MEL")


def tie_averaged_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (scipy.stats.rankdata's 'average', whose import
    would cost every run about 2 s of start-up)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


@torch.inference_mode()
def predict(model: nn.Module, data: TensorData, index: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(true labels, predicted labels (argmax of the logits), softmax probabilities (N, C),
    summed cross-entropy) over `index`, under inference mode (no autograd bookkeeping at all)."""
    model.eval()
    probabilities = torch.empty(len(index), data.num_classes, device=data.device)
    predicted = torch.empty(len(index), dtype=torch.long, device=data.device)
    loss = torch.zeros((), dtype=torch.float64, device=data.device)
    start = 0
    for part in index.split(batch_size):
        x, y = data.batch(part)
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        probabilities[start:start + len(part)] = logits.softmax(1)
        predicted[start:start + len(part)] = logits.argmax(1)
        start += len(part)
    labels = data.labels[index.to(data.device)]
    return labels.cpu().numpy(), predicted.cpu().numpy(), probabilities.cpu().numpy(), float(loss.item())


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """True x predicted counts."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def classification_metrics(confusion: np.ndarray, loss_sum: float, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro precision/recall/F1, mean loss, per-class recall
    (sensitivity) and specificity, melanoma sensitivity."""
    confusion = confusion.astype(float)
    n = confusion.sum()
    if n == 0:
        return {}
    hits = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    recall = _safe_divide(hits, support)
    precision = _safe_divide(hits, predicted)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    negatives = n - support
    specificity = _safe_divide(negatives - (predicted - hits), negatives)
    present = (support > 0) | (predicted > 0)
    metrics = {
        "accuracy": hits.sum() / n,
        "balanced_accuracy": recall[support > 0].mean(),
        "precision": precision[present].mean(),
        "recall": recall[present].mean(),
        "f1": f1[present].mean(),
        "loss": loss_sum / n,
    }
    metrics.update({f"recall/{name}": recall[i] for i, name in enumerate(classes) if support[i] > 0})
    metrics.update({f"specificity/{name}": specificity[i] for i, name in enumerate(classes) if negatives[i] > 0})
    metrics.update({"melanoma_sensitivity": recall[i] for i, name in enumerate(classes) if name in MELANOMA and support[i] > 0})
    return {k: float(v) for k, v in metrics.items()}


def macro_auroc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over classes with positives and negatives of the one-vs-rest AUROC (the Mann-Whitney
    U of the class's probability, ties counted half); NaN when no class qualifies."""
    positive = labels[:, None] == np.arange(probabilities.shape[1])[None, :]
    n_pos = positive.sum(0)
    n_neg = len(labels) - n_pos
    usable = (n_pos > 0) & (n_neg > 0)
    if not usable.any():
        return float("nan")
    ranks = np.column_stack([tie_averaged_ranks(column) for column in probabilities[:, usable].T])
    u = (ranks * positive[:, usable]).sum(0) - n_pos[usable] * (n_pos[usable] + 1) / 2
    return float((u / (n_pos[usable] * n_neg[usable])).mean())


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |bin| / N x |accuracy - mean confidence|; a
    confidence on an inner edge belongs to the lower bin (scikit-learn's `calibration_curve`)."""
    confidence = probabilities.max(1)
    correct = (probabilities.argmax(1) == labels).astype(float)  # the top-class confidence's own class
    which = np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], confidence)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=confidence, minlength=bins))
    return float(gap.sum() / max(count.sum(), 1))


def metrics_from_predictions(labels: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, loss_sum: float, classes: list[str]) -> dict[str, float]:
    """Every metric of one evaluated set (empty for an empty set)."""
    if not len(labels):
        return {}
    metrics = classification_metrics(confusion_matrix(labels, predicted, len(classes)), loss_sum, classes)
    auroc = macro_auroc(labels, probabilities)
    if not np.isnan(auroc):
        metrics["auroc"] = auroc
    metrics["ece"] = expected_calibration_error(labels, probabilities)
    return metrics


def evaluate(model: nn.Module, data: TensorData, index: torch.Tensor, batch_size: int) -> dict[str, float]:
    return metrics_from_predictions(*predict(model, data, index, batch_size), data.classes)
