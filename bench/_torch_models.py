"""A torch model for ``bench.models`` (imported only when torch is installed)."""

from __future__ import annotations

import torch


class MLP(torch.nn.Module):  # type: ignore[misc]
    """Ten square Linear layers of ``MLP.width`` (set by the scenario before use:
    artledger rebuilds a module by calling its class with no arguments)."""

    width = 256

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(self.width, self.width) for _ in range(10)
        )
