"""FedAvg (McMahan et al., AISTATS 2017): the base behaviour, registered under its name."""

from bench.methods import Method, register


@register
class FedAvg(Method):
    """FedAvg: sample-count-weighted mean of the clients' full states."""

    name = "fedavg"
