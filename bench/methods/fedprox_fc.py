"""FedProx-FC: FedProx whose final classifier layer stays personal (the FedLSC paper's baseline)."""

from dataclasses import dataclass

from bench.methods import register
from bench.methods.fedavg_fc import FedAvgFC
from bench.methods.fedprox import FedProx


@register
@dataclass(kw_only=True)
class FedProxFC(FedProx):
    """FedProx-FC: FedProx with the final classifier layer (head) kept personal."""

    name = "fedprox_fc"
    recipe = FedAvgFC.recipe
    personal_layers = FedAvgFC.personal_layers
