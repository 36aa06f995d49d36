"""Write a tiny real wheel (one module) that pip can install: for the boot-chain tests' wheel bundles.

usage: python make_wheel.py OUT_DIR NAME VERSION [PYTHON_TAG]   (PYTHON_TAG default py3, e.g. cp311)
The module NAME defines VERSION and TAG, so a test can import it from the venv the chain made.
"""
import base64
import hashlib
import sys
import zipfile
from pathlib import Path


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(out_dir, name: str, version: str, tag: str = "py3") -> Path:
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\nTAG = {tag!r}\n".encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: make_wheel\nRoot-Is-Purelib: true\n"
                               f"Tag: {tag}-none-any\n").encode(),
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = Path(out_dir) / f"{name}-{version}-{tag}-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in files.items():
            z.writestr(p, d)
    return out


if __name__ == "__main__":
    print(make_wheel(*sys.argv[1:]))
