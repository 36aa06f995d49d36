"""Loading a RoFormer checkpoint: the yaml beside it gives the dimensions, the file a plain state dict
(`torch.save(OrderedDict of tensors)`), loaded with `weights_only=True` and a strict `load_state_dict`.
Every way a file can be wrong is a `ModelPackError` naming the file (and the key where one is at fault)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelPackError
from .config import RoformerConfig, read_config
from .model import Roformer


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelPackError(f"{path.name}: the checkpoint is missing ({path})", [path.name])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refuses anything but tensors and plain containers (pickle.UnpicklingError); a cut file
        # fails in the zip reader. Either way the file is unusable: say which and why, no traceback.
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelPackError(f"{path.name}: not a readable torch checkpoint (truncated or damaged?): {why}",
                             [path.name]) from None
    if not isinstance(state, dict):
        raise ModelPackError(f"{path.name}: holds a {type(state).__name__}, not a state dict", [path.name])
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelPackError(f"{path.name}: key {key} holds a {type(value).__name__}, not a tensor", [path.name])
        if not value.is_floating_point():
            raise ModelPackError(f"{path.name}: key {key} is {value.dtype}, not a float tensor", [path.name])
    return state


def check_layout(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """The file has exactly the model's keys, each with the model's shape."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelPackError(f"{name}: key {missing[0]} is missing{more}: not this model or its yaml", [name])
    extra = [k for k in state if k not in want]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ModelPackError(f"{name}: unexpected key {extra[0]}{more}: not this model or its yaml", [name])
    for key, value in want.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelPackError(f"{name}: key {key} has shape {list(state[key].shape)}, the yaml's model needs "
                                 f"{list(value.shape)}", [name])


def load_model(ckpt: Path, config: Path | RoformerConfig, kind: str | None = None,
               device: torch.device | str = "cpu") -> Roformer:
    """The model of `ckpt` with the settings of `config` (a yaml path, read as `kind`, or a parsed config),
    in eval mode on `device`."""
    cfg = config if isinstance(config, RoformerConfig) else read_config(config, kind)
    state = read_state_dict(Path(ckpt))
    with torch.device("meta"):
        model = Roformer(cfg)
    check_layout(model, state, Path(ckpt).name)
    model = model.to_empty(device="cpu")  # no random init of weights about to be overwritten
    model.load_state_dict(state, strict=True)
    model.init_buffers()
    return model.eval().to(device)
