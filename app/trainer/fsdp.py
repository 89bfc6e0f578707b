"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for full fine-tunes under ``--gpus N``.

Why: DDP keeps a whole replica of the weights, their gradients and AdamW's two moments on every GPU (~16 bytes a
parameter in float32); a full fine-tune of the 3B does not fit that way. ``fully_shard`` splits each parameter
(dim 0) over the ranks, all-gathers a decoder layer's weights for its forward/backward and reduce-scatters its
gradients (averaged over the ranks, as DDP's), so each rank keeps 1/N of the weights, gradients and optimizer
state. LoRA keeps DDP: its adapters and their optimizer state are small (docs/scaling.md).

Checkpoints stay independent of N: :func:`full_state` gathers the whole trainable state and the optimizer's onto
rank 0's CPU (``full_state_dict=True, cpu_offload=True``) in the format one process writes (``opt.state_dict()``:
parameters numbered in the order of the trainable parameters), and :func:`load_optimizer` scatters such a file
back into the shards. The model's own tensors are loaded before sharding, so every rank starts from them.
"""

from __future__ import annotations

from typing import Any

MODES = ("auto", "on", "off")


def wanted(mode: str, *, world: int, lora: bool) -> bool:
    """Whether to shard: ``auto`` = a full fine-tune (not LoRA) over several processes; ``on`` the same, asked for."""
    return world > 1 and not lora and mode in ("auto", "on")


def shard(model: Any, device: str, world: int) -> Any:
    """Shard ``model`` in place: each decoder layer, then the root (embeddings, vision tower, norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if device.startswith("cuda") else "cpu", (world,))
    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def trainable_names(model: Any) -> list[str]:
    """The trainable parameters' names, in the order the optimizer numbers them (``model.parameters()``)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def full_weights(model: Any) -> dict[str, Any]:
    """The trainable tensors unsharded on rank 0's CPU ({} on the other ranks), for evaluation: the optimizer's
    state is left alone, since gathering it before the first step would first create it with a zero-lr step
    (torch's ``_init_optim_state``), which advances AdamW's step count and so changes every later update.
    Every rank must call it (it gathers)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    tensors = get_model_state_dict(model, options=_options())
    return {n: tensors[n].contiguous() for n in trainable_names(model)} if tensors else {}


def full_state(model: Any, opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable tensors, optimizer state_dict) unsharded on rank 0's CPU, as one process has them; ({}, {}) on
    the other ranks. Every rank must call it (it gathers)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    names = trainable_names(model)
    tensors = get_model_state_dict(model, options=_options())
    osd = get_optimizer_state_dict(model, opt, options=_options())
    if not tensors:
        return {}, {}
    index = {n: k for k, n in enumerate(names)}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[n] for n in g["params"]]}
              for g in osd["param_groups"]]
    return ({n: tensors[n].contiguous() for n in names},
            {"state": {index[n]: s for n, s in osd["state"].items()}, "param_groups": groups})


def load_optimizer(model: Any, opt: Any, saved: dict[str, Any]) -> None:
    """Load a one-process ``opt.state_dict()`` (every rank has the file) into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = trainable_names(model)
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in g["params"]]}
              for g in saved["param_groups"]]
    osd = {"state": {names[int(i)]: s for i, s in saved["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, opt, osd, options=StateDictOptions(full_state_dict=True))


def grad_norm(total: Any) -> float:
    """``clip_grad_norm_``'s result as a float: over sharded gradients it is a DTensor (the norm of all shards)."""
    return float(total.full_tensor() if hasattr(total, "full_tensor") else total)
