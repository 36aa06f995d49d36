"""The precision option and where the engine's models run, on the CPU (the CUDA side is in test_gpu.py)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SR
from mvsep.engine import Options, Separator
from mvsep.errors import OptionError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sep(vocals_pack):
    return Separator(vocals_pack, device="cpu", gpu_id=1)


def test_precision_values():
    assert Options().precision == "fp32"
    assert Options(precision="fp16").validate().precision == "fp16"
    assert Options(precision="bf16").validate().precision == "bf16"
    with pytest.raises(OptionError) as err:
        Options(precision="int8").validate()
    assert err.value.field == "precision"


def test_fp16_is_refused_on_the_cpu_before_any_work(sep, tmp_path):
    fp16 = Options(only_vocals=True, precision="fp16")
    src = tmp_path / "in.wav"
    sf.write(src, np.zeros((SR, 2), np.float32), SR)
    calls = [lambda: sep.separate_array(np.zeros((SR, 2), np.float32), SR, fp16),
             lambda: sep.separate_file(src, tmp_path / "out", fp16), lambda: sep.warm(fp16)]
    for call in calls:
        with pytest.raises(OptionError, match="fp16 needs a CUDA GPU") as err:
            call()
        assert err.value.field == "precision"
    assert not (tmp_path / "out").exists()
    assert set(sep.separate_array(np.zeros((SR, 2), np.float32), SR, Options(only_vocals=True))) == {
        "vocals", "instrumental"}  # fp32 runs


def test_cli_refuses_fp16_on_the_cpu_in_one_line(vocals_pack, tmp_path):
    src = tmp_path / "a.wav"
    sf.write(src, np.zeros((SR, 2), np.float32), SR)
    r = subprocess.run([sys.executable, str(ROOT / "mvsep" / "inference_demucs.py"), "-i", str(src), "-r",
                        str(tmp_path / "o"), "--cpu", "--only_vocals", "--model_dir", str(vocals_pack),
                        "--precision", "fp16"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("error: precision: fp16 needs a CUDA GPU; this engine runs on "
                                                 "the CPU (use fp32)")


def test_devices_report_what_torch_and_onnxruntime_run_on(sep):
    d = sep.devices()
    assert d["gpu_id"] == 1 and d["torch"] == "cpu"
    provider, options = d["onnxruntime"]
    assert provider == "CPUExecutionProvider" and isinstance(options, dict)
    assert sep.pack.onnx("Kim_Vocal_2.onnx").get_providers()[0] == provider  # from the real session


def test_fp16_mdx_graph_keeps_float32_io_and_the_numbers_close(vocals_pack):
    """The graph fp16 sessions load (on CUDA in production; ONNX Runtime's CPU provider runs it here too)."""
    import onnx
    import onnxruntime as ort

    from mvsep import onnx_io
    data = onnx_io.fp16_model(vocals_pack / "Kim_Vocal_2.onnx")
    graph = onnx.load_from_string(data).graph
    assert {i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)} == {onnx.TensorProto.FLOAT}
    assert {t.data_type for t in graph.initializer} == {onnx.TensorProto.FLOAT16}
    x = (np.random.default_rng(0).standard_normal((2, 4, 3072, 256)) * 10).astype(np.float32)
    half = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    full = ort.InferenceSession(str(vocals_pack / "Kim_Vocal_2.onnx"),
                                providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert half.dtype == np.float32 and half.shape == full.shape
    assert 0 < np.abs(half - full).max() < 1e-3 * np.abs(full).max()


def _magnitude_mask_graph(path: Path) -> None:
    """A small MDX-style mask net, as the demo pack's graphs are: |X| = sqrt(re^2 + im^2 + 1e-10), the
    inter-channel cosine (re_L re_R) / (|X_L| |X_R|), log-magnitudes through a conv, a sigmoid mask times X."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh
    c = lambda name, v: nh.from_array(np.asarray(v), name)  # noqa: E731
    inits = [c("two", np.float32(2)), c("eps", np.float32(1e-10)), c("floor", np.float32(1e-4)),
             c("w", np.full((1, 1, 3, 1), 0.1, np.float32)), c("s0", np.int64([0])), c("s1", np.int64([1])),
             c("s2", np.int64([2])), c("ax", np.int64([1]))]
    nodes = [h.make_node("Slice", ["x", "s0", "s1", "ax"], ["re"]), h.make_node("Slice", ["x", "s1", "s2", "ax"],
                                                                              ["im"]),
             h.make_node("Pow", ["re", "two"], ["re2"]), h.make_node("Pow", ["im", "two"], ["im2"]),
             h.make_node("Add", ["re2", "im2"], ["p"]), h.make_node("Add", ["p", "eps"], ["pe"]),
             h.make_node("Sqrt", ["pe"], ["mag"]), h.make_node("Mul", ["mag", "mag"], ["norm"]),
             h.make_node("Mul", ["re", "re"], ["rr"]), h.make_node("Div", ["rr", "norm"], ["cos"]),
             h.make_node("Add", ["mag", "floor"], ["mf"]), h.make_node("Log", ["mf"], ["feat"]),
             h.make_node("Conv", ["feat", "w"], ["hc"], pads=[1, 0, 1, 0]), h.make_node("Add", ["hc", "cos"], ["g"]),
             h.make_node("Sigmoid", ["g"], ["m"]), h.make_node("Mul", ["x", "m"], ["y"])]
    graph = h.make_graph(nodes, "mask", [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 16, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 2, 16, 4])], inits)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))


def test_fp16_graph_does_not_overflow_on_a_loud_spectrogram(tmp_path):
    """The `nan dB` of bench_precision.py (issue 22): the demo pack's MDX graphs square the raw spectrogram
    (|X| ~ 300 on its held-out clips: 300^2 > 65504, float16's largest value), so a graph converted to float16
    wholesale gives inf, then NaN, on the GPU. ONNX Runtime's CPU provider computes such nodes in float32,
    which hid it here; onnx's reference evaluator computes float16 as float16, as CUDA does. Why the CLI's fp16
    output looked finite: the bundled example peaks at |X| = 166 (166^2 < 65504), the held-out clips at 306,
    244 and 464, so two of three clips made NaN and their mean `nan dB`. Same code path, louder input."""
    import onnx
    from onnx.reference import ReferenceEvaluator
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from mvsep import onnx_io
    _magnitude_mask_graph(tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(-300, 300, (1, 2, 16, 4)).astype(np.float32)
    full = ReferenceEvaluator(str(tmp_path / "m.onnx")).run(None, {"x": x})[0]
    wholesale = convert_float_to_float16(onnx.load(str(tmp_path / "m.onnx")), keep_io_types=True)
    onnx_io._sort_nodes(wholesale.graph)
    assert not np.isfinite(ReferenceEvaluator(wholesale).run(None, {"x": x})[0]).all()  # the defect
    half = ReferenceEvaluator(onnx.load_from_string(onnx_io.fp16_model(tmp_path / "m.onnx"))).run(None, {"x": x})[0]
    assert np.isfinite(half).all() and half.dtype == np.float32
    assert np.abs(half - full).max() < 1e-2 * np.abs(full).max()


def test_fp16_demo_pack_graph_keeps_raw_spectrogram_arithmetic_in_float32():
    """The demo pack's real graph: its magnitude, cosine and log nodes read float32 tensors after conversion,
    the convolutions float16; ONNX Runtime loads it and the output stays close to float32's."""
    import onnx
    import onnxruntime as ort
    from testkit.demo_clips import PACK

    from mvsep import onnx_io
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_io.fp16_model(PACK / "Kim_Vocal_2.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)}
    kinds = {}
    for n in model.graph.node:
        if n.op_type in ("Pow", "Sqrt", "Log", "Div", "Conv"):
            kinds.setdefault(n.op_type, set()).add(types.get(n.input[0]))
    assert kinds["Pow"] == kinds["Sqrt"] == kinds["Log"] == {onnx.TensorProto.FLOAT}  # |X|^2, |X|, log|X|
    assert kinds["Div"] == {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}  # the cosine's; GELU's x / sqrt 2
    assert onnx.TensorProto.FLOAT16 in kinds["Conv"]
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # a valid graph


def test_a_reduced_precision_is_offered_only_on_cuda_and_over_40_db():
    from mvsep.precision import refusal
    good, bad = {"fp16": {"sdr_db": 59.0}, "bf16": {"sdr_db": 45.2}}, {"bf16": {"sdr_db": 31.5}}
    assert refusal("fp32", "cpu", False, {}) is None
    assert refusal("bf16", "cpu", True, good) == "bf16 needs a CUDA GPU; this engine runs on the CPU (use fp32)"
    assert "Ampere" in refusal("bf16", "cuda", False, good)
    assert refusal("bf16", "cuda", True, good) is None and refusal("fp16", "cuda", False, good) is None
    assert "31.5 dB, under 40 dB" in refusal("bf16", "cuda", True, bad)
    assert "not been measured" in refusal("fp16", "cuda", True, bad)


def test_bf16_is_refused_on_the_cpu_and_the_catalogue_offers_fp32_only(sep):
    from mvsep.catalog import catalogue
    with pytest.raises(OptionError, match="bf16 needs a CUDA GPU") as err:
        sep.separate_array(np.zeros((SR, 2), np.float32), SR, Options(only_vocals=True, precision="bf16"))
    assert err.value.field == "precision"
    assert catalogue(sep.pack)["precisions"] == ["fp32"]
    assert catalogue()["precisions"] is None


def test_the_demucs_runner_runs_under_bfloat16_autocast(vocals_pack):
    """The dtype plumbing of precision=bf16 on the real runner (CPU autocast has bfloat16 too)."""
    import torch

    from mvsep.demucs_runner import DemucsRunner
    from mvsep.pack import ModelPack
    model = ModelPack(vocals_pack, "cpu").demucs("04573f0d-f3cf25b2.th")
    x = (np.random.default_rng(1).standard_normal((3 * SR, 2)) * 0.1).astype(np.float32)
    outs = {}
    for half in (False, torch.bfloat16):
        got = np.zeros((4, 2, len(x)), np.float32)

        def emit(s, y, scale, got=got):
            got[..., s:s + y.shape[-1]] = y

        DemucsRunner(torch.device("cpu"), 2).run(model, lambda a, b: _read(x, a, b), len(x), 0.25, emit, half=half)
        outs[half] = got
    diff = np.abs(outs[False] - outs[torch.bfloat16]).max()
    assert np.isfinite(outs[torch.bfloat16]).all() and 0 < diff < 0.05 * np.abs(outs[False]).max()


def _read(x, a, b):
    out = np.zeros((b - a, 2), np.float32)
    lo, hi = max(a, 0), min(b, len(x))
    if lo < hi:
        out[lo - a:hi - a] = x[lo:hi]
    return out


def test_non_finite_samples_under_a_reduced_precision_fail_the_job(sep):
    """What fp16 on the demo pack did (NaN stems): a clear engine error before anything is encoded, never a
    stem of NaN (float WAV) or of clipped garbage (integer formats)."""
    from mvsep.errors import NumericError
    from mvsep.job import Job
    from mvsep.signals import ArraySignal
    vocals = np.zeros((SR, 2), np.float32)
    vocals[1000] = np.nan
    signals = {"mix": ArraySignal.zeros(SR, 2), "vocals": ArraySignal(vocals)}
    blocks = lambda p: sep.final_blocks(signals, signals["mix"], Options(only_vocals=True, precision=p),  # noqa: E731
                                        ("vocals", "instrumental"), SR, SR, Job(None, None))
    with pytest.raises(NumericError, match="precision fp16 overflowed"):
        list(blocks("fp16"))
    assert np.isnan(next(blocks("fp32"))["vocals"]).any()  # fp32 is left as it is (exact, no extra pass)
