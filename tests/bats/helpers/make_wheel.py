"""Write a tiny real wheel (one module) that pip can install: for the boot-chain tests' wheel bundles.

usage: python make_wheel.py OUT_DIR NAME VERSION [PYTHON_TAG] [--platform TAG] [--requires REQ]...
PYTHON_TAG defaults to py3 (e.g. cp311), the platform tag to any (e.g. manylinux_2_18_x86_64); each --requires
is a Requires-Dist line, markers included. The module NAME defines VERSION and TAG, so a test can import it from
the venv the chain made.
"""
import argparse
import base64
import hashlib
import zipfile
from pathlib import Path


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(out_dir, name: str, version: str, tag: str = "py3", platform: str = "any",
               requires: tuple[str, ...] = ()) -> Path:
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}.py": f"VERSION = {version!r}\nTAG = {tag!r}\n".encode(),
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: make_wheel\nRoot-Is-Purelib: true\n"
                               f"Tag: {tag}-none-{platform}\n").encode(),
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = Path(out_dir) / f"{name}-{version}-{tag}-none-{platform}.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in files.items():
            z.writestr(p, d)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("name")
    ap.add_argument("version")
    ap.add_argument("tag", nargs="?", default="py3")
    ap.add_argument("--platform", default="any")
    ap.add_argument("--requires", action="append", default=[])
    a = ap.parse_args()
    print(make_wheel(a.out_dir, a.name, a.version, a.tag, a.platform, tuple(a.requires)))
