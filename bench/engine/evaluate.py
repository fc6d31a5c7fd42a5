"""Classification metrics from a confusion matrix, with scikit-learn's conventions.

Macro precision/recall/F1 average over the classes present in the true or predicted labels,
with 0 for a zero division; balanced accuracy averages recall over the classes present in the
true labels, so a majority-class predictor scores exactly 1/C on a test set holding all C classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.engine.batches import TensorData

@torch.inference_mode()
def confusion_and_loss(model: nn.Module, data: TensorData, index: torch.Tensor, batch_size: int) -> tuple[np.ndarray, float]:
    """Confusion matrix (true x predicted counts) and summed cross-entropy over `index`, under
    inference mode (no autograd bookkeeping at all), read from the device once."""
    model.eval()
    c = data.num_classes
    counts = torch.zeros(c * c, dtype=torch.long, device=data.device)
    loss = torch.zeros((), dtype=torch.float64, device=data.device)
    for part in index.split(batch_size):
        x, y = data.batch(part)
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        counts += torch.bincount(y * c + logits.argmax(1), minlength=c * c)
    return counts.view(c, c).cpu().numpy(), float(loss.item())


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def classification_metrics(confusion: np.ndarray, loss_sum: float, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro precision/recall/F1, mean loss and per-class recall."""
    confusion = confusion.astype(float)
    n = confusion.sum()
    if n == 0:
        return {}
    hits = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    recall = _safe_divide(hits, support)
    precision = _safe_divide(hits, predicted)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
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
    return {k: float(v) for k, v in metrics.items()}


def evaluate(model: nn.Module, data: TensorData, index: torch.Tensor, batch_size: int) -> dict[str, float]:
    confusion, loss = confusion_and_loss(model, data, index, batch_size)
    return classification_metrics(confusion, loss, data.classes)
