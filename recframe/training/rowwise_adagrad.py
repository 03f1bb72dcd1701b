"""Row-wise Adagrad: one accumulator per embedding row, sparse or dense gradients."""

from __future__ import annotations

import torch


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row of each (rows, dim) parameter.

    For the gradient ``g_r`` (dim,) of row r at a step: ``G_r += mean(g_r ** 2)`` and
    ``w_r -= lr * g_r / (sqrt(G_r) + eps)`` (TorchRec's exact row-wise Adagrad). With a sparse
    gradient (``nn.Embedding(sparse=True)``) only the rows it holds are read and written, so a
    step costs O(rows looked up x dim) whatever the table size; the state is one float per row.

    Args:
        params: 2-D parameters (embedding tables).
        lr: learning rate; eps: added to the denominator;
        initial_accumulator_value: starting value of every accumulator.

    Example::

        table = torch.nn.Embedding(1_000_000, 64, sparse=True)
        opt = RowWiseAdagrad(table.parameters(), lr=0.05)
        table(torch.tensor([3, 7])).sum().backward()
        opt.step()  # rows 3 and 7 move; state["sum"] is a (1_000_000,) tensor
    """

    def __init__(self, params, lr: float = 0.05, eps: float = 1e-8, initial_accumulator_value: float = 0.0) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        super().__init__(params, {"lr": lr, "eps": eps, "initial_accumulator_value": initial_accumulator_value})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"RowWiseAdagrad updates (rows, dim) tables, got a parameter of shape {tuple(p.shape)}")
                self.state[p]["sum"] = torch.full((p.shape[0],), float(group["initial_accumulator_value"]),
                                                  dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                accumulator = self.state[p]["sum"]
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()  # one entry per row: duplicate lookups summed
                    rows, values = grad.indices()[0], grad.values()
                    accumulator.index_add_(0, rows, values.pow(2).mean(dim=1))
                    scale = accumulator[rows].sqrt().add_(eps)
                    p.index_add_(0, rows, values / scale.unsqueeze(1), alpha=-lr)
                else:
                    accumulator.add_(grad.pow(2).mean(dim=1))
                    p.addcdiv_(grad, accumulator.sqrt().add_(eps).unsqueeze(1), value=-lr)
        return loss


__all__ = ["RowWiseAdagrad"]
