"""FedBM (Zhu, Yang, Gao, Liu & Yuan, "FedBM: Stealing Knowledge from Pre-trained Language Models
for Heterogeneous Federated Learning", Medical Image Analysis 2025; MICCAI 2024 for LKCC; reference
code meiluzhu/FedBM, the CUHK-AIM-Group release): a classifier built from language concept
embeddings, frozen, and a generator of pseudo images that calibrates the clients' feature extractors.

LKCC (linguistic knowledge-based classifier construction; nodes.py, client_funct.client_fedbm).
The concept file `concepts` holds e_{c,n} (classes x prompts x dim): the text encoder's embedding of
prompt n about class c. Each is L2-normalised; per class
  mu_c = mean_n e_{c,n},   s2_c = diag Cov_n(e_{c,n})  (unbiased, over the prompts)
and the model is body -> Linear(features, dim) -> z, z_hat = z / ||z||, with the frozen classifier
  logits_c = T (z_hat . mu_c + T/2 z_hat^2 . s2_c)
  loss     = CE(logits, y) + T^2/2 z_hat^2 . s2_y
(the expected cross-entropy's upper bound over classifier weights w_c ~ N(mu_c, T s2_c), ISDA-style).
Only the body and the projection train and are averaged (FedAvg); the classifier never changes and
is never sent (every client builds it from the same file).

CGDE (concept-guided global distribution estimation; generator_driver.py, models_dict/generator.py).
A conditional generator G maps a concept embedding u ~ N(mu_c, Cov_n(e_{c,n}) + 1e-4 I) (the
full covariance) to an image. Every `generator_every` rounds the server trains it against the new
global model f (eval mode, frozen) for `generator_steps` Adam steps on `generator_batch` samples
with uniformly drawn classes:
  L_G = L_sem + lambda_dis L_dis + lambda_div L_div
  L_sem  the LKCC loss of f on G(u) with the sampled class (semantic regulariser)
  L_dis  sum over f's BatchNorm2d layers of ||mu_batch - mu_running||_2 + ||var_batch - var_running||_2
         (DeepInversion's statistics match: the stability regulariser)
  L_div  (1/C) sum_c mean_{pairs i<j of class c} 1 / (||G(u_i) - G(u_j)||_1 / ||u_i - u_j||_1 + 1e-5)
         (the diversity regulariser; classes with fewer than two samples add nothing)
Once G exists, every local batch gets `pseudo_batch` generated images of uniformly drawn classes,
and the loss is the LKCC loss averaged over the real and pseudo samples. Clients download G when
it changed since they last trained (counted in bytes).

Choices and their sources: temperature 12.5, generator lr 3e-4, 100 generator steps every 5 rounds,
64 samples per generator step, 16 pseudo images per batch and lambda_div = 1, lambda_dis = 0.1
follow training_script_FedBM.sh (its OCT runs); the generator's layout follows models_dict/
generator.py (a Linear to a 1/4-size map, upsampling conv-BN-LeakyReLU blocks, a sigmoid image)
with two upsamplings instead of four and `generator_width` 16 instead of 64, for CPU-sized images
(cropped to the image side). Differences: pseudo images are normalised with the dataset's mean
and standard deviation but not augmented (the reference crops and flips them), and they pass the
model in a forward of their own (the reference concatenates them with the real batch: one set of
BatchNorm statistics); the evaluation logits include the factor T, which changes no prediction.

The concept file: a torch tensor saved with `torch.save` (classes x prompts x dim, float), classes in
the dataset's class order. README "FedBM concept embeddings" says how to make it with a text encoder.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import existing_path
from bench.engine.seeds import derive_seed
from bench.errors import UserError
from bench.io import atomic_path
from bench.methods import Method, Recipe, hparam, register, uniform

GENERATOR_STREAM = 0xFB  # seed stream of the generator's initialisation and training
COVARIANCE_RIDGE = 1e-4  # added to the concept covariance before sampling (models_dict/generator.py)
DIVERSITY_EPS = 1e-5


# ---- LKCC --------------------------------------------------------------------------------------------
def read_concepts(path: str, num_classes: int) -> torch.Tensor:
    """The (classes, prompts, dim) concept embeddings, each L2-normalised; a one-line error otherwise."""
    if not path:
        raise UserError("method fedbm: set method.concepts to a file of class concept embeddings (classes x prompts x dim, torch.save); "
                        "README 'FedBM concept embeddings' says how to make one")
    file = existing_path(path, "method.concepts", "file", "make it with a text encoder (README 'FedBM concept embeddings')")
    try:
        concepts = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"config key 'method.concepts': {file} is not a readable torch file ({type(exc).__name__}); save the tensor with torch.save") from None
    if not isinstance(concepts, torch.Tensor) or concepts.dim() != 3 or not concepts.is_floating_point():
        raise UserError(f"config key 'method.concepts': {file} must hold one float tensor of classes x prompts x dim")
    if concepts.shape[0] != num_classes or concepts.shape[1] < 2:
        raise UserError(f"config key 'method.concepts': {file} has shape {tuple(concepts.shape)}; it needs {num_classes} classes "
                        "(the dataset's, in its order) and at least 2 prompts per class")
    if not torch.isfinite(concepts).all():
        raise UserError(f"config key 'method.concepts': {file} holds non-finite values")
    return F.normalize(concepts.float(), dim=-1)


def standin_concepts(path: Path, classes: int = 4, prompts: int = 5, dim: int = 16, seed: int = 0) -> Path:
    """A deterministic stand-in for a text encoder's concept file (tests, `fedrank check-method`):
    each class's prompts scattered around its own random centre, so the classes' distributions differ."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 1, dim, generator=generator)
    with atomic_path(path) as partial:  # whole or not at all: parallel test processes share the file
        torch.save(centres + 0.3 * torch.randn(classes, prompts, dim, generator=generator), partial)
    return path


def concept_distributions(concepts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class the mean mu_c (C, D) and the diagonal of the prompts' unbiased covariance s2_c (C, D)."""
    return concepts.mean(1), concepts.var(1, unbiased=True)


def concept_logits(features: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, temperature: float) -> torch.Tensor:
    """T (z_hat mu^T + T/2 z_hat^2 s2^T) for features z (B, D)."""
    z = F.normalize(features, dim=1)
    return temperature * (z @ means.T + 0.5 * temperature * z.pow(2) @ variances.T)


def lkcc_loss(features: torch.Tensor, labels: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per sample CE(logits, y) + T^2/2 z_hat^2 . s2_y."""
    z = F.normalize(features, dim=1)
    ce = F.cross_entropy(concept_logits(features, means, variances, temperature), labels, reduction="none")
    return ce + 0.5 * temperature ** 2 * (z.pow(2) * variances[labels]).sum(1)


class ConceptClassifier(nn.Module):
    """The frozen, pre-constructed classifier: concept logits of the projected features. Its
    distributions are buffers outside the state dict: never trained, averaged or sent."""

    def __init__(self, means: torch.Tensor, variances: torch.Tensor, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.register_buffer("means", means, persistent=False)
        self.register_buffer("variances", variances, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return concept_logits(features, self.means, self.variances, self.temperature)


# ---- CGDE ------------------------------------------------------------------------------------------------
class ConceptGenerator(nn.Module):
    """G: a concept embedding (B, D) -> an image (B, channels, height, width_px) in [0, 1]."""

    def __init__(self, dim: int, channels: int, height: int, width_px: int, width: int):
        super().__init__()
        self.size, self.start, self.width = (height, width_px), math.ceil(max(height, width_px) / 4), width
        self.project = nn.Linear(dim, 2 * width * self.start ** 2)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]

        self.blocks = nn.Sequential(*block(2 * width, 2 * width), nn.Upsample(scale_factor=2), *block(2 * width, 2 * width),
                                    nn.Upsample(scale_factor=2), *block(2 * width, width), nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        out = self.project(codes).view(len(codes), 2 * self.width, self.start, self.start)
        return self.blocks(out)[..., : self.size[0], : self.size[1]]


def concept_sampler(concepts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class the mean (C, D) and the Cholesky factor (C, D, D) of Cov_n(e_{c,n}) + 1e-4 I."""
    eye = torch.eye(concepts.shape[-1], dtype=torch.float64)
    covariances = torch.stack([torch.cov(c.double().T) + COVARIANCE_RIDGE * eye for c in concepts])
    return concepts.mean(1), torch.linalg.cholesky(covariances).float()


def sample_concepts(labels: torch.Tensor, means: torch.Tensor, cholesky: torch.Tensor) -> torch.Tensor:
    """u_i ~ N(mu_{y_i}, Sigma_{y_i}) from the global random stream."""
    noise = torch.randn(len(labels), means.shape[1], 1, device=means.device)
    return means[labels] + (cholesky[labels] @ noise).squeeze(2)


def diversity_loss(codes: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(1/C) sum_c mean_{i<j in c} 1 / (||x_i - x_j||_1 / ||u_i - u_j||_1 + eps)."""
    total = codes.new_zeros(())
    for c in range(num_classes):
        chosen = labels == c
        if chosen.sum() > 1:
            ratio = F.pdist(images[chosen].flatten(1), p=1) / F.pdist(codes[chosen], p=1)
            total = total + (1 / (ratio + DIVERSITY_EPS)).mean()
    return total / num_classes


def batchnorm_statistics_loss(inputs: dict[nn.Module, torch.Tensor]) -> torch.Tensor:
    """sum over BatchNorm2d layers of ||mean - running_mean||_2 + ||var - running_var||_2 of their input batch."""
    terms = []
    for bn, x in inputs.items():
        mean, var = x.mean((0, 2, 3)), x.permute(1, 0, 2, 3).flatten(1).var(1, unbiased=False)
        terms.append(torch.norm(bn.running_var - var, 2) + torch.norm(bn.running_mean - mean, 2))
    return torch.stack(terms).sum() if terms else torch.zeros(())


# ---- the method ----------------------------------------------------------------------------------------
@register
@dataclass(kw_only=True)
class FedBM(Method):
    """FedBM: a frozen classifier from language concept embeddings (LKCC) and a shared generator's pseudo data (CGDE)."""

    name = "fedbm"
    mean_of_updates = True  # the weighted mean; the generator learns from the new global model only
    in_all = False  # it needs a concept-embedding file a `methods: all` study does not give (configs/deer_fedbm.yaml names it)
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.9}, source="meiluzhu/FedBM utils.init_optimizer and main.py: SGD, momentum 0.9")
    concepts: str = hparam("", "file of class concept embeddings, classes x prompts x dim (torch.save); README 'FedBM concept embeddings'")
    temperature: float = hparam(12.5, "temperature T of the concept classifier", exclusiveMinimum=0,
                                search=uniform(7.5, 17.5, source="meiluzhu/FedBM training_script_FedBM.sh: T in {7.5, 12.5, 17.5}"))
    generator_every: int = hparam(5, "train the generator after every this many rounds (0: never, LKCC only)", minimum=0)
    generator_steps: int = hparam(100, "Adam steps per generator training", minimum=1)
    generator_lr: float = hparam(3e-4, "generator learning rate (Adam, betas 0.5, 0.999)", exclusiveMinimum=0)
    generator_batch: int = hparam(64, "samples per generator step", minimum=2)
    generator_width: int = hparam(16, "channels of the generator's last block (the reference: 64)", minimum=1)

    @classmethod
    def test_setting(cls, scratch):
        # a stand-in concept file; the generator every round, briefly: two rounds then cover CGDE's state, bytes and resumption
        return {"method__concepts": str(standin_concepts(scratch / "fedbm_standin_concepts.pt")),
                "method__generator_every": 1, "method__generator_steps": 2, "method__generator_batch": 8}
    pseudo_batch: int = hparam(16, "generated images added to every local batch once the generator exists", minimum=0)
    lambda_div: float = hparam(1.0, "weight of the generator's diversity regulariser", minimum=0)
    lambda_dis: float = hparam(0.1, "weight of the generator's BatchNorm-statistics (stability) regulariser", minimum=0)
    _generator: ConceptGenerator | None = field(default=None, init=False, repr=False)
    _sampler: tuple | None = field(default=None, init=False, repr=False)

    # ---- model and state ----
    def model(self, base, spec):
        concepts = read_concepts(self.concepts, spec.num_classes)
        base.body = nn.Sequential(base.body, nn.Linear(base.head.in_features, concepts.shape[2]))
        base.head = ConceptClassifier(*concept_distributions(concepts), self.temperature)
        return base

    def setup(self, fed):
        fed.server["generator"] = {k: v.clone() for k, v in self.new_generator(fed).state_dict().items()}
        fed.server["generator_version"] = 0

    def prepare(self, fed):
        concepts = read_concepts(self.concepts, fed.data.num_classes)
        self._sampler = tuple(t.to(fed.device) for t in concept_sampler(concepts))
        self._generator = self.new_generator(fed)

    def new_generator(self, fed) -> ConceptGenerator:
        """G with its seeded initial weights, on the run's device."""
        channels, height, width = fed.data.images.shape[1:]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(fed.config["seed"], GENERATOR_STREAM, zlib.crc32(b"init")))
            return ConceptGenerator(fed.model.head.means.shape[1], channels, height, width, self.generator_width).to(fed.device)

    def generator(self, fed) -> ConceptGenerator:
        self._generator.load_state_dict(fed.server["generator"])
        return self._generator

    # ---- clients ----
    def train(self, fed, client):
        version = fed.server["generator_version"]
        client.state["generator_version"] = version
        model, head = fed.model_of(client), fed.model_of(client).head
        pseudo = self.pseudo_data(fed) if version and self.pseudo_batch else None

        def loss(batch):
            losses = lkcc_loss(batch.features, batch.y, head.means, head.variances, self.temperature)
            if pseudo is not None:
                x, y = pseudo()
                losses = torch.cat([losses, lkcc_loss(model.body(x), y, head.means, head.variances, self.temperature)])
            return losses.mean()

        return fed.fit(client, loss=loss)

    def pseudo_data(self, fed):
        """A draw of `pseudo_batch` normalised generated images and their classes (no gradient to G)."""
        generator = self.generator(fed).eval()

        @torch.no_grad()
        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            labels = torch.randint(fed.data.num_classes, (self.pseudo_batch,), device=fed.device)
            images = generator(sample_concepts(labels, *self._sampler))
            return (images - fed.data.mean) / fed.data.std, labels

        return draw

    def download_bytes(self, fed, client):
        stale = fed.server["generator_version"] and client.state.get("generator_version") != fed.server["generator_version"]
        extra = sum(t.numel() * t.element_size() for t in fed.server["generator"].values() if t.is_floating_point()) if stale else 0
        return super().download_bytes(fed, client) + extra

    # ---- server ----
    def aggregate(self, fed, updates):
        new_state = super().aggregate(fed, updates)
        if self.generator_every and fed.round % self.generator_every == 0:
            self.train_generator(fed, new_state)
        return new_state

    def train_generator(self, fed, global_state: torch.Tensor) -> None:
        """CGDE: fit G to the new global model with the three regularisers; G goes to fed.server."""
        model = fed.scratch_model("fedbm_discriminator")
        fed.layout.scatter(model, global_state)
        model.eval().requires_grad_(False)
        generator = self.generator(fed).train()
        optimizer = torch.optim.Adam(generator.parameters(), lr=self.generator_lr, betas=(0.5, 0.999))
        seen: dict[nn.Module, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda m, inputs, _out: seen.__setitem__(m, inputs[0]))
                 for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        totals = torch.zeros(3, device=fed.device)
        try:
            with torch.random.fork_rng(devices=[fed.device] if fed.device.type == "cuda" else []):
                torch.manual_seed(derive_seed(fed.config["seed"], GENERATOR_STREAM, fed.round))
                for _ in range(self.generator_steps):
                    labels = torch.randint(fed.data.num_classes, (self.generator_batch,), device=fed.device)
                    codes = sample_concepts(labels, *self._sampler)
                    images = generator(codes)
                    features = model.body((images - fed.data.mean) / fed.data.std)
                    terms = torch.stack([lkcc_loss(features, labels, model.head.means, model.head.variances, self.temperature).mean(),
                                         batchnorm_statistics_loss(seen).to(fed.device),
                                         diversity_loss(codes, images, labels, fed.data.num_classes)])
                    optimizer.zero_grad(set_to_none=True)
                    (terms[0] + self.lambda_dis * terms[1] + self.lambda_div * terms[2]).backward()
                    optimizer.step()
                    totals += terms.detach()
        finally:
            for hook in hooks:
                hook.remove()
        for name, value in zip(("semantic", "stability", "diversity"), totals / self.generator_steps):
            fed.record(f"generator/{name}", value, ())
        fed.server["generator"] = {k: v.detach().clone() for k, v in generator.state_dict().items()}
        fed.server["generator_version"] += 1
