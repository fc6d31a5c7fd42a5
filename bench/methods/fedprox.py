"""FedProx (Li et al., MLSys 2020): FedAvg plus a proximal term in the local loss."""

from dataclasses import dataclass

from bench.methods import Method, Recipe, hparam, loguniform, proximal_term, register


@register
@dataclass(kw_only=True)
class FedProx(Method):
    """FedProx: local loss + (mu/2)||w - w_g||^2 on the shared layers, FedAvg aggregation."""

    name = "fedprox"
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0}, source="Li et al. MLSys 2020, Sec. 5.1: the local solver is SGD")
    mu: float = hparam(0.001, "weight mu of the proximal term (mu/2)||w - w_g||^2", minimum=0,
                       search=loguniform(0.001, 1.0, source="Li et al. MLSys 2020, Sec. 5.3: the best mu of {0.001, 0.01, 0.1, 1}"))

    def local_loss(self, fed, client):
        return proximal_term(fed, self.mu, ~self.personal_layers(fed))
