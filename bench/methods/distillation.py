"""Knowledge transfer through predictions on the public split, shared by MDH-FL, FedMD and FedDF.

The pieces: each client's architecture from a list hyper-parameter; a model's logits on the
public images (eval mode, no augmentation); the softened-KL loss; a fit of a model to per-image
targets on the public split; and `PublicKnowledge`, the protocol of MDH-FL and FedMD, where every
client keeps its own model and only predictions on public data travel.

Teachers are predictions computed once per round on the un-augmented public images (they are what
a client sends), not recomputed on each augmented batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.engine.federation import Client, Federation, Update, Updates
from bench.engine.trainer import FitResult
from bench.methods.base import Method, hparam

# RHFL's (and MDH-FL's) four client models, in client order: ShuffleNetV2, ResNet-10, MobileNetV2, ResNet-12
ZOO = ["shufflenet_v2", "resnet10", "mobilenet_v2", "resnet12"]
ARCHITECTURE = {"type": ["string", "object"], "description": "a model name or a `model` config section"}
ALIGN_STREAM = 0xA11  # batch-order stream of a client's fit on the public split (its private fit keeps stream 0)
FLOAT_BYTES = 4


def architecture(architectures: tuple, client: int) -> dict | None:
    """Client i's `model` section: entry i mod len of the list (a name or a section); None if empty."""
    if not architectures:
        return None
    entry = architectures[client % len(architectures)]
    return {"name": entry} if isinstance(entry, str) else dict(entry)


@torch.no_grad()
def predict(model: nn.Module, fed: Federation, index: torch.Tensor) -> torch.Tensor:
    """(len(index), C) float logits of `model` in eval mode on dataset images, without augmentation."""
    model.eval()
    parts = index.split(fed.config["eval"]["batch_size"])
    return torch.cat([model(fed.data.batch(part)[0]).float() for part in parts])


def softened(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax(logits / temperature, dim=1)


def soft_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || softmax(student / T)), averaged over the batch (Hinton et al. 2015: the
    T^2 keeps the gradient scale independent of T; at T = 1 it is RHFL's and FedDF's loss)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_student, teacher_probs, reduction="batchmean")


def fit_to_targets(fed: Federation, client: Client, targets: torch.Tensor, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   epochs: int, **learner) -> FitResult:
    """Train on the public split so that `loss(logits, targets of the batch's images)` falls;
    `targets[k]` belongs to image `fed.public[k]`."""
    row = torch.full((len(fed.data.labels),), -1, dtype=torch.long, device=fed.public.device)
    row[fed.public] = torch.arange(len(fed.public), device=fed.public.device)

    def batch_loss(batch) -> torch.Tensor:
        return loss(batch.logits, targets[row[batch.index].to(targets.device)])

    return fed.fit(client, indices=fed.public, loss=batch_loss, epochs=epochs, stream=ALIGN_STREAM, **learner)


def prediction_bytes(fed: Federation) -> int:
    """Bytes of one set of predictions on the public split (float32 logits or probabilities)."""
    return len(fed.public) * fed.data.num_classes * FLOAT_BYTES


@dataclass(kw_only=True)
class PublicKnowledge(Method):
    """Base of MDH-FL and FedMD (not a method): clients keep their own models, of their own
    architectures; each round a client first learns from the server's teacher on the public split
    (built from the other clients' latest predictions), then trains on its private data, then
    sends its predictions on the public split. Nothing else travels, and there is no global model.

    Uploading predictions after private training and aligning to them at the start of the next
    round is the reference order (RHFL's and FedMD's rounds: align/digest, then private training):
    the models a client aligns to are the others' after their last private training. The server
    keeps every client's latest predictions, so with partial participation a client also learns
    from clients that did not report last round."""

    has_global_model = False
    requires = ("public_split",)
    mean_of_updates = "the server keeps each client's own logits on the public split"
    architectures: tuple = hparam(ZOO, "client models, client i gets entry i mod length (names or model sections; [] = every client the configured model)",
                                  items=ARCHITECTURE)

    def teacher(self, fed: Federation, client: Client) -> torch.Tensor | None:
        """What the server sends this client, from the stored predictions (None: nothing yet)."""
        raise NotImplementedError

    def align(self, fed: Federation, client: Client, teacher: torch.Tensor) -> None:
        """Train the client's model towards the teacher on the public split."""
        raise NotImplementedError

    def client_architecture(self, client: int) -> dict | None:
        return architecture(self.architectures, client)

    def personal_layers(self, fed: Federation) -> torch.Tensor:
        return ~fed.layout.no_layers()

    def predictions(self, fed: Federation) -> dict[int, torch.Tensor]:
        """Each client's latest logits on the public split, by client id."""
        return fed.server.get("predictions", {})

    def receive(self, fed: Federation, client: Client) -> None:
        own = client.state.get("model")
        fed.layout_of(client).scatter(fed.model_of(client), own if own is not None else self.start_state(fed, client))

    def train(self, fed: Federation, client: Client) -> FitResult:
        teacher = self.teacher(fed, client)
        if teacher is not None:
            self.align(fed, client, teacher)
        return fed.fit(client, loss=self.client_loss(fed, client), extra_loss=self.local_loss(fed, client))

    def upload(self, fed: Federation, client: Client, fit: FitResult) -> Update:
        """The client keeps its trained model and sends its logits on the public split."""
        model = fed.model_of(client)
        client.state["model"] = fed.layout_of(client).gather(model)
        return Update(client.id, client.num_samples, fit, extra={"predictions": predict(model, fed, fed.public)})

    def aggregate(self, fed: Federation, updates: Updates) -> torch.Tensor:
        fed.server["predictions"] = {**self.predictions(fed), **{u.client: u.extra["predictions"] for u in updates.items}}
        return fed.global_state

    def keep(self, fed: Federation, client: Client) -> None:
        """Nothing to do: the client kept its model when it uploaded."""

    def download_bytes(self, fed: Federation, client: Client) -> int:
        return prediction_bytes(fed) if self.teacher(fed, client) is not None else 0

    def upload_bytes(self, fed: Federation, client: Client, update: Update) -> int:
        return prediction_bytes(fed)
