"""Extra model objects loaded with a given flat state: a client's own full model v_i (Ditto, APFL),
the frozen reference models of a contrastive term (MOON), a scratch copy to fine-tune (FedBABU).

One object per name serves every client in turn: its state is loaded before each use, so what it
held before never matters; what must persist lives in `client.state` / `fed.server` as flat vectors
of the main layout. Frozen references and evaluation copies are scratch models (not
checkpointed); a personal model trained in place is an extra model, checkpointed with its
integer buffers. This module registers no method.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.engine.federation import Client, Federation

PERSONAL_MODEL = "personal_model"  # client.state key of v_i
INITIAL_MODEL = "initial_model"  # fed.server key of w^0


def holding(fed: Federation, name: str, state: torch.Tensor, scratch: bool = True) -> nn.Module:
    """The model object `name` with the flat `state` loaded into it: a scratch model, or (for one
    trained in place) an extra model, checkpointed."""
    model = fed.scratch_model(name) if scratch else fed.extra_model(name)
    fed.layout.scatter(model, state)
    return model


def remember_initial_model(fed: Federation) -> None:
    """Keep w^0, every client's personal model before it first trains (`setup`, fresh runs only)."""
    fed.server[INITIAL_MODEL] = fed.global_state.clone()


def personal_model(fed: Federation, client: Client) -> nn.Module:
    """The client's v_i loaded into the shared personal model object: w^0 until it first trains
    (Ditto's and APFL's reference code start every v_i from the initial model)."""
    return holding(fed, "personal", client.state.get(PERSONAL_MODEL, fed.server[INITIAL_MODEL]), scratch=False)


def store_personal_model(fed: Federation, client: Client, model: nn.Module) -> None:
    """Save v_i after a round the client reported in (train runs only for reporting clients)."""
    client.state[PERSONAL_MODEL] = fed.layout.gather(model)
