"""ONNX Runtime sessions for the MDX models: provider options, the fp16 graph, and running a batch.

On the CPU a batch goes in and out as numpy, as it always did. On CUDA the spectrogram stays a torch tensor
on the GPU: ONNX Runtime reads it and writes its output in place through IO binding, so nothing crosses to the
host between the STFT, the model and the iSTFT.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("mvsep.onnx")

CUDA = "CUDAExecutionProvider"
GPU_MEM_SHARE = 0.35  # ONNX Runtime's arena may take at most this share of the GPU; torch keeps the rest


def cuda_provider_options(gpu_id: int, total_bytes: int) -> dict:
    """A bounded arena that grows by what is asked (not by doubling), and cuDNN's heuristic algorithm choice
    instead of a timed search per new input shape."""
    return {"device_id": gpu_id, "gpu_mem_limit": int(total_bytes * GPU_MEM_SHARE),
            "arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC",
            "do_copy_in_default_stream": True}


def providers(device: str, gpu_id: int) -> list:
    """The providers a session of this pack is created with: CUDA first (same GPU as torch) when asked and
    installed, the CPU always as the fallback."""
    import onnxruntime as ort
    out: list = ["CPUExecutionProvider"]
    if device == "cuda":
        if CUDA in ort.get_available_providers():
            total = torch.cuda.get_device_properties(gpu_id).total_memory
            out.insert(0, (CUDA, cuda_provider_options(gpu_id, total)))
        else:
            log.warning("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu): MDX runs on the "
                        "CPU, much slower")
    return out


def session_device(session) -> tuple[str, dict]:
    """(provider, its options) that a session really runs on, as ONNX Runtime reports them."""
    name = session.get_providers()[0]
    options = dict(session.get_provider_options().get(name, {}))
    if "device_id" in options:  # ONNX Runtime reports every option as a string
        options["device_id"] = int(options["device_id"])
    return name, options


def fp16_model(path: Path) -> bytes:
    """The model with float16 weights and arithmetic, its inputs and outputs still float32 (so the STFT and
    iSTFT around it are unchanged)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    return model.SerializeToString()


def on_cuda(session) -> bool:
    return session.get_providers()[0] == CUDA


def run_batch(session, spec: torch.Tensor, shrink_arena: bool = False) -> torch.Tensor:
    """The model's output for a [P, 4, F, T] float32 spectrogram, as a float32 tensor on spec's device."""
    if spec.device.type != "cuda" or not on_cuda(session):
        out = session.run(None, {session.get_inputs()[0].name: spec.cpu().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out, np.float32)).to(spec.device)
    import onnxruntime as ort
    spec = spec.contiguous()
    out = torch.empty_like(spec)  # MDX-Net outputs have the input's shape
    gpu = spec.device.index if spec.device.index is not None else torch.cuda.current_device()
    binding = session.io_binding()
    binding.bind_input(session.get_inputs()[0].name, "cuda", gpu, np.float32, tuple(spec.shape), spec.data_ptr())
    binding.bind_output(session.get_outputs()[0].name, "cuda", gpu, np.float32, tuple(out.shape), out.data_ptr())
    options = ort.RunOptions()
    if shrink_arena:  # hand the arena's unused chunks back to CUDA once this run ends
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", f"gpu:{gpu}")
    torch.cuda.current_stream(spec.device).synchronize()  # the STFT has finished writing `spec`
    session.run_with_iobinding(binding, options)  # returns once the output is written
    return out
