"""FedAvg-FC: FedAvg whose final classifier layer stays personal (the FedLSC paper's baseline)."""

from bench.methods import register
from bench.methods.fedavg import FedAvg


@register
class FedAvgFC(FedAvg):
    """FedAvg-FC: FedAvg with the final classifier layer (head) kept personal."""

    name = "fedavg_fc"

    def personal_layers(self, fed):
        return fed.classifier_layers
