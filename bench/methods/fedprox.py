"""FedProx (Li et al., MLSys 2020): FedAvg plus a proximal term in the local loss."""

from dataclasses import dataclass

from bench.methods import Method, hparam, proximal_term, register


@register
@dataclass(kw_only=True)
class FedProx(Method):
    """FedProx: local loss + (mu/2)||w - w_g||^2 on the shared layers, FedAvg aggregation."""

    name = "fedprox"
    mu: float = hparam(0.001, "weight mu of the proximal term (mu/2)||w - w_g||^2", minimum=0)

    def local_loss(self, fed, client):
        return proximal_term(fed, self.mu, ~self.personal_layers(fed))
