"""torch.distributed for recframe: process group from torchrun's environment, rank helpers,
collectives with a clear error when a peer rank dies or hangs, and a gradient-carrying
all-gather for global in-batch negatives.

Under ``torchrun --nproc_per_node=N -m recframe.train ...`` the environment holds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` initializes
the default process group from them (gloo on CPU, NCCL on CUDA, one device per local rank)
with ``train_config.process_group_timeout_seconds`` as the collective timeout. Without
``WORLD_SIZE`` > 1 nothing is initialized and every helper is a no-op (rank 0 of 1).

A failed collective (a peer that died: "connection closed by peer"; a peer that hangs: the
timeout) is re-raised as :class:`DistributedError` whose message names this rank, the world
size and the timeout setting; ``recframe.train`` / ``recframe.evaluate`` print it on one line and
exit with status 3.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "DistributedError",
    "all_reduce_sparse_gradients_",
    "all_gather_with_grad",
    "all_reduce_sum_",
    "barrier",
    "broadcast_",
    "broadcast_bool",
    "cleanup",
    "ensure_process_group",
    "comm_errors",
    "env_world_size",
    "is_distributed",
    "is_main",
    "local_rank",
    "rank",
    "setup",
    "world_size",
]

_state: dict = {"timeout": None, "gather_group": None, "owned": False}


class DistributedError(RuntimeError):
    """A collective failed: another rank died, hung past the timeout, or the group broke."""


def env_world_size() -> int:
    """WORLD_SIZE of the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank())) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0 (or not distributed): the process that writes checkpoints, logs and prints."""
    return rank() == 0


def setup(device: torch.device, timeout_seconds: float) -> torch.device:
    """Initialize the process group when WORLD_SIZE > 1; returns this rank's device.

    CUDA: device ``cuda:LOCAL_RANK`` and the NCCL backend; CPU: gloo. A no-op returning
    ``device`` unchanged when not launched by torchrun (or already initialized).
    """
    world = env_world_size()
    if world <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=float(timeout_seconds))
        try:
            dist.init_process_group(backend, timeout=timeout)
        except (RuntimeError, ValueError) as e:
            raise DistributedError(
                f"rank {os.environ.get('RANK', '?')}/{world}: could not join the process group "
                f"({backend}, MASTER_ADDR={os.environ.get('MASTER_ADDR')}, MASTER_PORT={os.environ.get('MASTER_PORT')}) "
                f"within {timeout_seconds:g} s (train_config.process_group_timeout_seconds): {_first_line(e)}"
            ) from e
        _state["owned"] = True
        _state["timeout"] = float(timeout_seconds)
        # Gradient all-gathers of global negatives run in backward, interleaved with DDP's
        # bucket all-reduces: a group of their own keeps the two streams of collectives apart.
        _state["gather_group"] = dist.new_group(backend=backend, timeout=timeout)
    return device


def ensure_process_group(device: torch.device, timeout_seconds: float) -> None:
    """A process group even without torchrun (one rank, through a file store), for code that
    needs one (TorchRec's sharding); :func:`cleanup` destroys it. Under torchrun it joins the
    launched group (:func:`setup`)."""
    if dist.is_initialized():
        return
    if env_world_size() > 1:
        setup(device, timeout_seconds)
        return
    import tempfile

    handle, path = tempfile.mkstemp(prefix="recframe-pg-")
    os.close(handle)
    os.unlink(path)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=float(timeout_seconds))
    dist.init_process_group(backend, init_method=f"file://{path}", rank=0, world_size=1, timeout=timeout)
    _state.update(owned=True, timeout=float(timeout_seconds), gather_group=dist.GroupMember.WORLD)


def cleanup() -> None:
    """Destroy the process group this module created (no-op otherwise)."""
    if _state["owned"] and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # a broken group (dead peer) may fail to tear down: nothing to save
            pass
    _state.update(owned=False, gather_group=None, timeout=None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def describe_failure(error: BaseException, what: str = "a collective operation") -> str:
    """The one-line message of a failed collective."""
    timeout = _state["timeout"]
    limit = f"{timeout:g} s" if timeout is not None else "the timeout"
    return (f"rank {rank()}/{world_size()}: {what} failed: another rank died, or did not answer within "
            f"{limit} (train_config.process_group_timeout_seconds); see the other ranks' output. "
            f"Resume with --continue_train. Cause: {_first_line(error)}")


@contextmanager
def comm_errors(what: str = "a collective operation") -> Iterator[None]:
    """Re-raise a RuntimeError of a failed collective as DistributedError (distributed only)."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as e:
        if not is_distributed():
            raise
        raise DistributedError(describe_failure(e, what)) from e


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        with comm_errors("barrier"):
            dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (on the backend's device, copied back)."""
    if not is_distributed():
        return tensor
    with comm_errors("all_reduce"):
        work = tensor.to(_comm_device())
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        tensor.copy_(work.to(tensor.device))
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` on every rank, in place (on the backend's device, copied back)."""
    if not is_distributed():
        return tensor
    with comm_errors("broadcast"):
        work = tensor.to(_comm_device())
        dist.broadcast(work, src)
        if work is not tensor:
            tensor.copy_(work.to(tensor.device))
    return tensor


def broadcast_bool(value: bool, src: int = 0) -> bool:
    """Rank ``src``'s ``value`` on every rank."""
    if not is_distributed():
        return bool(value)
    with comm_errors("broadcast"):
        flag = torch.tensor([1 if value else 0], dtype=torch.int64, device=_comm_device())
        dist.broadcast(flag, src)
    return bool(flag.item())


def _gather_padded(tensor: torch.Tensor, sizes: Sequence[int], group) -> torch.Tensor:
    """Concatenation over ranks of ``tensor`` (first dim ``sizes[r]`` on rank r)."""
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's rows. Backward: sum the (global) gradient over ranks
    and keep this rank's slice, so each rank's rows receive the gradient of every rank's loss."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: tuple[int, ...], offset: int, group) -> torch.Tensor:
        ctx.offset, ctx.length, ctx.group = offset, tensor.shape[0], group
        return _gather_padded(tensor, sizes, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        with comm_errors("all_reduce of global negatives' gradients"):
            dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.offset: ctx.offset + ctx.length], None, None, None


def gather_sizes(local: int, device: torch.device) -> list[int]:
    """Every rank's ``local`` value."""
    if not is_distributed():
        return [int(local)]
    with comm_errors("all_gather"):
        mine = torch.tensor([int(local)], dtype=torch.int64, device=device)
        parts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, mine, group=_state["gather_group"])
    return [int(p.item()) for p in parts]


def all_gather_with_grad(tensor: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Rows of every rank, concatenated in rank order; gradients flow back to each rank's rows.

    ``sizes[r]`` is rank r's number of rows (they may differ, e.g. a short last batch).
    """
    if not is_distributed():
        return tensor
    offset = sum(sizes[: rank()])
    with comm_errors("all_gather of global negatives"):
        return _AllGatherWithGrad.apply(tensor, tuple(int(s) for s in sizes), offset, _state["gather_group"])


def all_gather_rows(tensor: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Rows of every rank, concatenated in rank order (no gradient)."""
    if not is_distributed():
        return tensor
    with comm_errors("all_gather"):
        return _gather_padded(tensor, sizes, _state["gather_group"])


def all_reduce_sparse_gradients_(params: Sequence[torch.nn.Parameter]) -> None:
    """Average the sparse gradients of ``params`` over ranks, in place (as DDP averages dense ones).

    Each rank's coalesced (rows, values) are all-gathered and summed: dense collectives only,
    so it works with NCCL, which has no sparse all-reduce, as with gloo. The traffic grows with
    the rows the ranks looked up, not with the tables. A no-op when not distributed.
    """
    if not is_distributed():
        return
    world = world_size()
    with comm_errors("all_gather of sparse gradients"):
        for p in params:
            grad = p.grad
            if grad is None:  # a table no rank looked up this step: an empty gradient
                grad = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long, device=p.device),
                                               p.new_zeros((0, *p.shape[1:])), p.shape)
            grad = grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
            device = _comm_device()
            sizes = gather_sizes(rows.numel(), device)
            all_rows = _gather_padded(rows.to(device), sizes, _state["gather_group"]).to(p.device)
            all_values = _gather_padded(values.to(device), sizes, _state["gather_group"]).to(p.device)
            p.grad = torch.sparse_coo_tensor(all_rows.unsqueeze(0), all_values / world, p.shape).coalesce()
