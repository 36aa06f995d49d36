"""Malformed and hostile inputs against the real server: every one is a JSON 4xx that names what was wrong."""
from __future__ import annotations

import shutil
import socket

import pytest

from mvsep import Options
from mvsep.audio import probe
from mvsep.errors import OptionError
from service.store import Store, new_job_id, valid_id
from testkit.service import Server, make_wav, wait_job

DEAD_URL = "http://127.0.0.1:1/a.wav"  # never fetched: every case below fails before the download


@pytest.fixture(scope="module")
def pack_without_kim1(tmp_path_factory, vocals_pack):
    pack = tmp_path_factory.mktemp("nokim1") / "pack"
    shutil.copytree(vocals_pack, pack)
    (pack / "Kim_Vocal_1.onnx").unlink(missing_ok=True)
    return pack


@pytest.fixture(scope="module")
def server(tmp_path_factory, pack_without_kim1):
    srv = Server(tmp_path_factory.mktemp("inputs") / "data", pack_without_kim1, SPARK_MAX_UPLOAD_MB=2).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def done_job(client, tmp_path_factory):
    clip = make_wav(tmp_path_factory.mktemp("clip") / "a.wav", 0.5).read_bytes()
    r = client.post("/jobs", files={"file": ("a.wav", clip)}, data={"stems": "vocals"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "succeeded", job
    return job


def _error(r, status: int, code: str, field: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["error"] == code and body["message"], body
    if field:
        assert body.get("field") == field, body
    return body


@pytest.mark.parametrize("stems", [5, None, True, [1, 2], {"a": 1}, [["vocals"]]])
def test_json_stems_of_the_wrong_type(client, stems):
    body = _error(client.post("/jobs", json={"url": DEAD_URL, "stems": stems}), 422, "invalid_option", "stems")
    assert "comma list" in body["message"]


def test_json_nested_30000_deep(client):
    deep = "[" * 30000 + "]" * 30000
    r = client.post("/jobs", content=f'{{"url": {deep}}}', headers={"content-type": "application/json"})
    assert "nested too deep" in _error(r, 422, "invalid_request")["message"]


def test_log_offset_past_the_end(client, done_job):
    r = client.get(f"/jobs/{done_job['id']}/logs", params={"offset": 9223372036854775807})
    assert r.status_code == 422 and r.json()["field"] == "offset"  # over 2**53: refused by name
    r = client.get(f"/jobs/{done_job['id']}/logs", params={"offset": 2**53})
    assert r.status_code == 200 and r.json()["text"] == "" and r.json()["complete"] is True
    _error(client.get(f"/jobs/{done_job['id']}/logs", params={"offset": 2**64}), 422, "invalid_request", "offset")


def test_range_requests(client, done_job):
    url = f"/jobs/{done_job['id']}/stems/vocals"
    whole = client.get(url)
    size = len(whole.content)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes" and size > 100
    for malformed in ("bytes=abc", "items=0-1", "bytes=5-3", "bytes", "bytes=", "bytes=1-2-3", "bytes=--5"):
        r = client.get(url, headers={"Range": malformed})
        assert r.status_code == 200 and r.content == whole.content, malformed  # ignored, RFC 9110 §14.2
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0",
                          f"bytes={size}-,{size * 2}-"):
        body = _error(client.get(url, headers={"Range": unsatisfiable}), 416, "range_not_satisfiable")
        r = client.get(url, headers={"Range": unsatisfiable})
        assert r.headers["content-range"] == f"bytes */{size}" and body["size"] == size
    r = client.get(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == whole.content[:10]
    assert r.headers["content-range"] == f"bytes 0-9/{size}"
    r = client.get(url, headers={"Range": f"bytes=10-19, {size + 5}-"})  # the unsatisfiable part is dropped
    assert r.status_code == 206 and r.content == whole.content[10:20]
    r = client.get(url, headers={"Range": "bytes=-4"})
    assert r.status_code == 206 and r.content == whole.content[-4:]


def test_head_on_downloads(client, done_job):
    for path in (f"/jobs/{done_job['id']}/stems/vocals", f"/jobs/{done_job['id']}/result.zip"):
        full = client.get(path)
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path
        assert int(r.headers["content-length"]) == len(full.content)
        assert r.headers["x-spark-job-id"] == done_job["id"]
    assert client.head(f"/jobs/{done_job['id']}/stems/drums").status_code == 404


def test_a_model_the_request_chose_is_not_in_pack(client):
    body = _error(client.post("/jobs", json={"url": DEAD_URL, "use_kim_model_1": True}), 422, "not_in_pack")
    assert body["missing"] == ["Kim_Vocal_1.onnx"] and "Kim_Vocal_1.onnx" in body["message"]
    assert "use_kim_model_1" in body["message"]
    assert client.get("/ready").status_code == 200  # the service is not reported down


def test_file_under_another_field_name(client):
    r = client.post("/jobs", files={"upload": ("a.wav", b"RIFF" + b"\0" * 100_000)})
    body = _error(r, 422, "invalid_input", "file")
    assert "'upload'" in body["message"] and "`file`" in body["message"]


def test_oversized_form_field_is_named(client):
    r = client.post("/jobs", files={"file": ("a.wav", b"RIFF")}, data={"stems": "v" * 70_000})
    assert "'stems'" in _error(r, 413, "too_large", "stems")["message"]


def test_multipart_body_without_its_closing_boundary(client, tmp_path):
    clip = make_wav(tmp_path / "a.wav", 0.3).read_bytes()
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n" + clip)  # ... and no "\r\n--XyZ--"
    before = len(client.get("/jobs").json()["jobs"])
    r = client.post("/jobs", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"})
    assert "truncated multipart body" in _error(r, 400, "truncated_body")["message"]
    assert len(client.get("/jobs").json()["jobs"]) == before


def test_too_many_parts_or_a_huge_part_header(client):
    parts = b"".join(b"--B\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n" % i for i in range(100))
    r = client.post("/jobs", content=parts + b"--B--\r\n",
                    headers={"content-type": "multipart/form-data; boundary=B"})
    assert "form parts" in _error(r, 413, "too_large")["message"]
    part = b"--B\r\nContent-Disposition: form-data; name=\"" + b"n" * 10_000 + b"\"\r\n\r\nx\r\n--B--\r\n"
    r = client.post("/jobs", content=part, headers={"content-type": "multipart/form-data; boundary=B"})
    assert "header size" in _error(r, 400, "bad_request")["message"]


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity"])
def test_overlap_must_be_finite(client, value):
    r = client.post("/jobs", files={"file": ("a.wav", b"RIFF")}, data={"overlap_large": value})
    assert "finite number" in _error(r, 422, "invalid_option", "overlap_large")["message"]


def test_wait_junk_is_refused_as_a_form_field_and_as_a_query(client):
    r = client.post("/separate", files={"file": ("a.wav", b"RIFF")}, data={"wait": "junk"})
    assert "true or false" in _error(r, 422, "invalid_option", "wait")["message"]
    r = client.post("/separate", json={"url": DEAD_URL, "wait": "junk"})
    _error(r, 422, "invalid_option", "wait")
    _error(client.post("/separate?wait=junk", json={"url": DEAD_URL}), 422, "invalid_request", "wait")


def test_shift_and_chunk_ranges_come_from_the_catalogue(client):
    """GET /recipes states the ranges; the engine accepts their ends, the HTTP API refuses one step past."""
    mdx = next(r for r in client.get("/recipes").json()["recipes"] if r["name"] == "mdx23")
    ranges = {o["name"]: (o["min"], o["max"]) for o in mdx["options"]}
    for name in ("shifts", "chunk_size"):
        lo, hi = ranges[name]
        Options(**{name: lo}).validate()
        Options(**{name: hi}).validate()
        for bad in (lo - 1, hi + 1):
            with pytest.raises(OptionError):
                Options(**{name: bad}).validate()
    hi = ranges["shifts"][1]
    r = client.post("/jobs", json={"url": DEAD_URL, "shifts": hi + 1})
    assert str(hi) in _error(r, 422, "invalid_option", "shifts")["message"]
    _error(client.post("/jobs", json={"url": DEAD_URL, "chunk_size": 1}), 422, "invalid_option", "chunk_size")


def test_queue_position_is_never_0(tmp_path):
    st = Store(tmp_path)
    ids = [new_job_id() for _ in range(3)]
    for i in ids:
        st.insert(i, {}, {}, "real")
    assert [st.queue_position(i) for i in ids] == [1, 2, 3]
    claimed = st.claim_next("test-worker", 30.0)  # a row read as queued just before the worker took it
    assert claimed["id"] == ids[0] and st.queue_position(ids[0]) == 1
    assert [st.queue_position(i) for i in ids[1:]] == [1, 2]
    st.close()


def test_job_ids_are_matched_whole(client):
    jid = new_job_id()
    assert valid_id(jid) and not valid_id(jid + "\n") and not valid_id(jid.upper()) and not valid_id(jid[:-1])
    _error(client.get(f"/jobs/{jid}%0A"), 404, "not_found")


def test_probe_stops_decoding_at_the_cap(tmp_path):
    path = make_wav(tmp_path / "long.wav", 6.0, sr=8000)
    full = probe(path)
    capped = probe(path, max_seconds=1.0)
    assert full.frames == 48000
    assert 1.0 < capped.duration < 1.5 and capped.frames < full.frames


def test_invalid_http_gets_a_json_400(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 400") and b"application/json" in data and b'"bad_request"' in data
