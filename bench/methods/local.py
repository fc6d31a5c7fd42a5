"""Local-only training: the no-federation lower bound every method must beat."""

from bench.methods import Method, register


@register
class Local(Method):
    """Local-only: each client trains alone; nothing is communicated."""

    name = "local"
    has_global_model = False
    mean_of_updates = True  # its server combines nothing

    def personal_layers(self, fed):
        return ~fed.layout.no_layers()

    def aggregate(self, fed, updates):
        return fed.global_state
