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
    with pytest.raises(OptionError) as err:
        Options(precision="bf16").validate()
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
