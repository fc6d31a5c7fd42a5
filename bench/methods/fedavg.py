"""FedAvg (McMahan et al., AISTATS 2017): the base behaviour, registered under its name."""

from bench.methods import Method, Recipe, register


@register
class FedAvg(Method):
    """FedAvg: sample-count-weighted mean of the clients' full states."""

    name = "fedavg"
    recipe = Recipe(settings={"train.optimizer": "sgd", "train.momentum": 0.0}, source="McMahan et al. AISTATS 2017, Algorithm 1: local SGD")
