"""FedAvg-FC: FedAvg whose final classifier layer stays personal (the FedLSC paper's baseline)."""

from bench.methods import Recipe, register
from bench.methods.fedavg import FedAvg


@register
class FedAvgFC(FedAvg):
    """FedAvg-FC: FedAvg with the final classifier layer (head) kept personal."""

    name = "fedavg_fc"
    recipe = Recipe(settings={"train.optimizer": "adam"}, source="Liu, Chen & Lv 2026, Sec. 4: the FedLSC paper's baseline, trained as FedLSC (Adam)")

    def personal_layers(self, fed):
        return fed.classifier_layers
