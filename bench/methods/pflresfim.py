"""pFL-ResFIM (Zhu, Li, Wang & Lam, "Personalized Federated Learning with Residual Fisher
Information for Medical Image Segmentation", arXiv 2603.14848, 2026): the parameters most sensitive
to the other clients' image styles stay personal, element by element.

No code is public; this follows the abstract, and every choice below is fedrank's own (sources
named). Client i, after its local training (cross-entropy, as FedAvg) at its trained weights w:
  styles     each client shares the low-frequency FFT amplitudes of `styles` random training
             images (un-normalised, [0, 1]): the centred box of rows/cols c -+ b, b = floor(min(H, W)
             `band`) (FedDG's amplitude bank and box: liuquande/FedDG-ELCFS, low_freq_mutate_np;
             b at most (min(H, W) - 1) // 2 so the box fits a tiny image);
             sent once, at its first report; a client downloads the others' every round it takes part
  restyle    for each of `fisher_samples` random training images x (labels y kept), with A_x e^{iP_x}
             = FFT2(x), A_s a random style of another client and lam ~ U(0, 1) per image:
               A' = (1 - lam) A_x + lam A_s inside the box, A_x outside;  x~ = clip(Re IFFT2(A' e^{iP_x}), 0, 1)
             (FedDG's continuous frequency-space interpolation, its clip to the pixel range)
  Fisher     F(D)[e] = mean_{(x, y) in D} (d log p_w(y | x) / d w_e)^2, the diagonal empirical Fisher
             from per-sample gradients in eval mode (BatchNorm statistics fixed), on the own images
             (F_own) and on the same images re-styled (F_restyled)
  ResFIM     R = |F_restyled - F_own|
  mask       M_i = the round(`share` x T) trainable elements with the largest R, T = trainable
             elements: one ranking over the whole model (the abstract's reading), or with
             `per_layer` within each layer (the Fisher's scale differs by orders of magnitude
             between layers, so a global ranking personalises the first layers almost whole);
             buffers (BatchNorm statistics) are never personal. Recomputed every round the client
             reports; none while no other client's styles are known (round 1: FedAvg).
Client i sends its state except its personal elements, plus M_i as a bitmap (P / 8 bytes) once it
has any; it keeps its personal elements w_i[M_i] and loads them over the server's model whenever it
receives. Server, per element e, over the K reporting clients with n_k samples:
  w[e] = sum_k n_k [not M_k[e]] w_k[e] / sum_k n_k [not M_k[e]]     (unchanged if every M_k[e])
A client downloads only its shared elements (the server knows its last mask), plus the styles.
Evaluated per client: the server's model with the client's personal elements.
Hooks used: setup, receive, train, upload, aggregate, keep, personalized, download_bytes,
upload_bytes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from bench.engine.seeds import derive_seed
from bench.methods import Method, hparam, register
from bench.methods.fourier import centred, centred_spectrum, from_centred_spectrum

STYLE_STREAM, FISHER_STREAM = 0x57E1, 0xF15E


def low_band(height: int, width: int, band: float) -> tuple[slice, slice]:
    """FedDG's centred box: rows and columns c -+ b, b = floor(min(H, W) band), at most the
    spectrum's (min(H, W) - 1) // 2 so that the box fits."""
    side = min(height, width)
    b = min(math.floor(side * band), (side - 1) // 2)
    return centred(height, b, b + 1), centred(width, b, b + 1)


def low_band_amplitude(images: torch.Tensor, band: float) -> torch.Tensor:
    """(B, C, 2b + 1, 2b + 1) centred low-frequency amplitudes of (B, C, H, W) images: the styles."""
    rows, cols = low_band(*images.shape[-2:], band)
    return centred_spectrum(images)[0][..., rows, cols]


def restyle(images: torch.Tensor, styles: torch.Tensor, lam: torch.Tensor, band: float) -> torch.Tensor:
    """Images in [0, 1] with their low band amplitude moved a share lam (B,) towards `styles`."""
    amplitude, phase = centred_spectrum(images)
    rows, cols = low_band(*images.shape[-2:], band)
    lam = lam.view(-1, 1, 1, 1)
    amplitude[..., rows, cols] = (1 - lam) * amplitude[..., rows, cols] + lam * styles
    return from_centred_spectrum(amplitude, phase).clamp(0, 1)


def diagonal_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """Per trainable parameter: the mean over samples of the squared per-sample gradient of the
    log-likelihood of y (eval mode)."""
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for xs, ys in zip(x.split(chunk), y.split(chunk)):
        for n, g in per_sample(params, xs, ys).items():
            total[n] += g.pow(2).sum(0)
    return {n: t / len(x) for n, t in total.items()}


def top_share(scores: torch.Tensor, eligible: torch.Tensor, share: float) -> torch.Tensor:
    """(P,) bool: the round(share x eligible) eligible elements with the largest scores."""
    count = round(share * int(eligible.sum()))
    chosen = torch.where(eligible, scores, torch.full_like(scores, -math.inf)).topk(count).indices
    return torch.zeros_like(eligible).index_fill_(0, chosen, True)


def masked_mean(states: torch.Tensor, masks: torch.Tensor, samples: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Per element, the sample-weighted mean over the clients that share it (not masked); `fallback`
    where none does."""
    total, weight = torch.zeros_like(fallback), torch.zeros_like(fallback)
    for state, mask, n in zip(states, masks, samples):
        w = n * (~mask).to(state.dtype)
        total += w * state
        weight += w
    return torch.where(weight > 0, total / weight.clamp_min(torch.finfo(weight.dtype).tiny), fallback)


@register
@dataclass(kw_only=True)
class PFLResFIM(Method):
    """pFL-ResFIM: elements most sensitive to other clients' styles (residual Fisher) stay personal."""

    name = "pflresfim"
    mean_of_updates = "the server reads each client's personal-parameter mask and style statistics"
    private_training = "it computes Fisher information and amplitude-spectrum styles from client records outside DP-SGD, and sends the styles"
    share: float = hparam(0.1, "share of the trainable elements each client keeps personal (largest ResFIM)", minimum=0, maximum=1)
    band: float = hparam(0.1, "low-frequency box half-size as a share of min(H, W) (FedDG's L)", minimum=0, maximum=0.5)
    styles: int = hparam(8, "amplitude spectra each client shares (random training images)", minimum=1)
    fisher_samples: int = hparam(128, "training images per Fisher estimate (own and re-styled)", minimum=1)
    per_layer: bool = hparam(False, "rank the ResFIM within each layer (every layer keeps `share` personal) instead of over the model")
    element_bytes: torch.Tensor | None = dataclasses.field(default=None, init=False, repr=False)

    def setup(self, fed):
        fed.server["styles"] = {}

    def personalized(self, fed):
        return True

    # ---- client ---------------------------------------------------------------------------
    def receive(self, fed, client):
        state = self.start_state(fed, client)
        if "values" in client.state:
            state = state.clone()
            state[client.state["mask"]] = client.state["values"]
        fed.layout_of(client).scatter(fed.model_of(client), state)

    def train(self, fed, client):
        fit = super().train(fed, client)
        others = [s for c, s in sorted(fed.server["styles"].items()) if c != client.id]
        mask = torch.zeros_like(fed.trainable)
        if others:
            mask = self.personal_mask(fed, self.residual_fisher(fed, client, torch.cat(others)))
        client.state["mask"] = mask
        return fit

    def personal_mask(self, fed, resfim: torch.Tensor) -> torch.Tensor:
        """(P,) bool: the `share` of trainable elements with the largest ResFIM, overall or per layer."""
        if not self.per_layer:
            return top_share(resfim, fed.trainable, self.share)
        return torch.cat([top_share(r, e, self.share) for r, e in zip(fed.layout.split(resfim), fed.layout.split(fed.trainable))])

    def residual_fisher(self, fed, client, styles: torch.Tensor) -> torch.Tensor:
        """(P,) |F_restyled - F_own| at the client's trained model, on its layout (0 on buffers)."""
        generator = torch.Generator().manual_seed(derive_seed(fed.config["seed"], fed.round, client.id, FISHER_STREAM))
        index = client.train[torch.randperm(len(client.train), generator=generator)[: self.fisher_samples].to(client.train.device)]
        x, y = fed.data.batch(index)
        pick = torch.randint(len(styles), (len(x),), generator=generator).to(styles.device)
        lam = torch.rand(len(x), generator=generator).to(x.device)
        mean, std = fed.data.mean, fed.data.std
        restyled = (restyle(x * std + mean, styles[pick], lam, self.band) - mean) / std
        chunk, model = fed.config["eval"]["batch_size"], fed.model_of(client)
        own, other = diagonal_fisher(model, x, y, chunk), diagonal_fisher(model, restyled, y, chunk)
        flat = torch.zeros_like(fed.global_state)
        views = fed.layout.views(flat)
        for name in own:
            views[name].copy_((other[name] - own[name]).abs())
        return flat

    def own_styles(self, fed, client) -> torch.Tensor:
        """The low-band amplitudes of `styles` training images, drawn once per client and seed."""
        generator = torch.Generator().manual_seed(derive_seed(fed.config["seed"], STYLE_STREAM, client.id))
        index = client.train[torch.randperm(len(client.train), generator=generator)[: self.styles].to(client.train.device)]
        x, _ = fed.data.batch(index)
        return low_band_amplitude(x * fed.data.std + fed.data.mean, self.band)

    def upload(self, fed, client, fit):
        update = super().upload(fed, client, fit)
        update.extra["personal"] = client.state["mask"]
        if client.id not in fed.server["styles"]:
            update.extra["style"] = self.own_styles(fed, client)
        return update

    def keep(self, fed, client):
        client.state["values"] = fed.upload_row(client)[client.state["mask"]].clone()

    # ---- server ---------------------------------------------------------------------------
    def aggregate(self, fed, updates):
        masks = torch.stack([u.extra["personal"] for u in updates.items])
        fed.server["styles"].update({u.client: u.extra["style"] for u in updates.items if "style" in u.extra})
        personal = fed.layout.split(masks.to(updates.states.dtype).mean(0))
        fed.record("personal_share", torch.stack([layer.mean() for layer in personal]), ("layer",))
        return masked_mean(updates.states, masks, updates.num_samples, fed.global_state)

    # ---- accounting -----------------------------------------------------------------------
    def shared_bytes(self, fed, client) -> int:
        """Bytes of the elements the client shares (all before its first mask)."""
        if "mask" not in client.state:
            return fed.layout.nbytes()
        if self.element_bytes is None:
            self.element_bytes = fed.layout.expand(fed.layout.element_bytes).to(fed.device)
        return int(self.element_bytes[~client.state["mask"]].sum())

    def download_bytes(self, fed, client):
        styles = sum(s.numel() * s.element_size() for c, s in fed.server["styles"].items() if c != client.id)
        return self.shared_bytes(fed, client) + styles

    def upload_bytes(self, fed, client, update):
        bitmap = math.ceil(fed.layout.size / 8) if update.extra["personal"].any() else 0
        style = update.extra["style"].numel() * update.extra["style"].element_size() if "style" in update.extra else 0
        return self.shared_bytes(fed, client) + bitmap + style
