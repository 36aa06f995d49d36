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


# Ops that keep their range (or widen it) when applied to the raw spectrogram. Arithmetic on values derived
# from the graph input only through these stays float32: a bin of an ordinary mix reaches |X| ~ 300-2000, so
# its square (a magnitude, |X|^2) passes float16's 65504 and turns into inf, then NaN (the demo pack's masks).
RAW_PASS = frozenset({"Slice", "Gather", "Reshape", "Transpose", "Concat", "Split", "Squeeze", "Unsqueeze",
                      "Expand", "Pad", "Neg", "Abs", "Identity", "Cast", "Mul", "Add", "Sub", "Div", "Pow",
                      "Sqrt", "ReduceSum", "ReduceMean", "MatMul"})
RAW_ARITHMETIC = frozenset({"Mul", "Add", "Sub", "Div", "Pow", "Sqrt", "ReduceSum", "ReduceMean", "MatMul",
                            "Log", "Exp", "Reciprocal"})


def raw_arithmetic_nodes(graph) -> list[str]:
    """Names of the nodes that do arithmetic on the unnormalised graph input (before any conv, norm or log)."""
    raw = {i.name for i in graph.input}
    blocked = []
    changed = True
    while changed:  # the converted graphs are not always topologically sorted: iterate to a fixed point
        changed = False
        for n in graph.node:
            if n.output and n.output[0] in raw or not any(i in raw for i in n.input):
                continue
            if n.op_type in RAW_ARITHMETIC:
                blocked.append(n.name)
            if n.op_type in RAW_PASS:
                raw.update(n.output)
                changed = True
    return blocked


def fp16_model(path: Path) -> bytes:
    """The model with float16 weights and arithmetic, its inputs and outputs still float32 (so the STFT and
    iSTFT around it are unchanged). Arithmetic on the raw spectrogram (`raw_arithmetic_nodes`) stays float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = onnx.load(str(path))
    for i, n in enumerate(model.graph.node):  # node_block_list matches by name; exporters may leave it empty
        n.name = n.name or f"mvsep_node_{i}"
    model = convert_float_to_float16(model, keep_io_types=True, node_block_list=raw_arithmetic_nodes(model.graph))
    _drop_duplicate_casts(model.graph)
    _skip_round_trips(model.graph)
    _sort_nodes(model.graph)
    return model.SerializeToString()


def _drop_duplicate_casts(graph) -> None:
    """The converter adds one Cast per reader of a tensor that feeds a kept-float32 node, all with the same
    name and output: keep the first of each (they compute the same thing)."""
    made: set[str] = set()
    for n in list(graph.node):
        if n.op_type == "Cast" and n.output[0] in made:
            graph.node.remove(n)
        made.update(n.output)


def _sort_nodes(graph) -> None:
    """Topological order (the converter appends the input casts last; ONNX requires the order, and
    onnx.reference.ReferenceEvaluator, the float16-exact evaluator the tests use, relies on it)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    todo, done = list(graph.node), []
    while todo:
        rest = [n for n in todo if not all(i in ready for i in n.input)]
        if len(rest) == len(todo):  # a cycle or a dangling input: leave the rest as it was
            done += rest
            break
        for n in todo:
            if n not in rest:
                done.append(n)
                ready.update(n.output)
        todo = rest
    copies = [type(n)() for n in done]
    for c, n in zip(copies, done):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _skip_round_trips(graph) -> None:
    """Between two kept-float32 nodes the converter stores the tensor as float16 (Cast to 16, Cast back to 32),
    which overflows exactly where float32 was wanted: read the float32 tensor directly instead."""
    import onnx
    producer = {o: n for n in graph.node for o in n.output}
    to = lambda n: next(a.i for a in n.attribute if a.name == "to")  # noqa: E731
    for n in graph.node:
        if n.op_type != "Cast" or to(n) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(n.input[0])
        if first is not None and first.op_type == "Cast" and to(first) == onnx.TensorProto.FLOAT16:
            n.op_type = "Identity"
            del n.attribute[:]
            n.input[0] = first.input[0]


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
