"""The URL guard: which addresses a URL input may reach.

The classifier is a pure function, tested on literals. Refused targets are also sent through the real
`fetch_url` and a real server, but only inside a network namespace that has nothing but loopback
(`unshare -n`), so nothing can leave the machine even if the guard let something through.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import subprocess
import sys

import pytest

from service import urlguard

PUBLIC_V4 = "93.184.216.34"  # any globally routable IPv4 (never contacted)

REFUSED = {
    # plain IPv4
    "0.0.0.0": "unspecified", "127.0.0.1": "loopback", "127.255.255.254": "loopback", "10.1.2.3": "private",
    "172.16.0.1": "private", "192.168.1.1": "private", "169.254.169.254": "link-local",
    "100.64.0.1": "shared", "100.127.255.254": "shared", "224.0.0.1": "multicast", "239.255.255.250": "multicast",
    "255.255.255.255": "broadcast", "240.0.0.1": "reserved", "192.0.2.1": "private", "198.18.0.1": "private",
    # plain IPv6
    "::": "unspecified", "::1": "loopback", "fe80::1": "link-local", "fe80::1%eth0": "link-local",
    "fc00::1": "private", "fd12:3456::1": "private", "ff02::1": "multicast", "ff0e::1": "multicast",
    "fec0::1": "site-local", "2001:db8::1": "private", "100::1": "private",
    # IPv4 embedded in IPv6, judged by the IPv4 address
    "::ffff:127.0.0.1": "loopback", "::ffff:10.0.0.1": "private", "::ffff:0.0.0.0": "unspecified",
    "::127.0.0.1": "loopback", "::10.0.0.1": "private", "::169.254.169.254": "link-local",
    "::ffff:0:10.0.0.1": "private",
    "64:ff9b::7f00:1": "loopback", "64:ff9b::10.0.0.1": "private", "64:ff9b::169.254.169.254": "link-local",
    "64:ff9b::100.64.0.1": "shared",
    "2002:7f00:1::": "loopback", "2002:a00:1::1": "private", "2002:c0a8:101:1::1": "private",
    "2002:a9fe:a9fe::": "link-local",
    # Teredo: server 65.54.227.120, client = NOT(last 32 bits): 7f000001 -> 127.0.0.1, 0a000001 -> 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "loopback", "2001:0:4136:e378:8000:63bf:f5ff:fffe": "private",
    "2001:0:a00:1:8000:63bf:a25c:22dd": "private",  # the server part is private
    # local-use NAT64 (RFC 8215): its layout is the operator's, refused as a whole
    "64:ff9b:1::808:808": "site-local",
}

ALLOWED = [PUBLIC_V4, "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
           "::ffff:93.184.216.34", f"::{PUBLIC_V4}", "64:ff9b::5db8:d822", "2002:5db8:d822::1",
           "2001:0:4136:e378:8000:63bf:a247:27dd"]  # Teredo client 93.184.216.34 via a public server


@pytest.mark.parametrize("literal", sorted(REFUSED))
def test_refused_addresses(literal):
    why = urlguard.problem(literal)
    assert why is not None, literal
    assert why.startswith(REFUSED[literal].split()[0]) or REFUSED[literal] in why, (literal, why)
    if ":" in literal and "%" not in literal and urlguard.embedded_ipv4(ipaddress.ip_address(literal)):
        assert "embedded in" in why


@pytest.mark.parametrize("literal", ALLOWED)
def test_public_unicast_is_allowed(literal):
    assert urlguard.problem(literal) is None, literal


def test_unspecified_and_multicast_are_refused_even_when_private_targets_are_allowed():
    for literal in ("0.0.0.0", "::", "224.0.0.1", "ff02::1", "::ffff:0.0.0.0", "64:ff9b::e000:1"):
        assert urlguard.always_refused(urlguard.problem(literal)), literal
    for literal in ("127.0.0.1", "10.0.0.1", "::1", "fd00::1", "2002:a00:1::"):
        assert not urlguard.always_refused(urlguard.problem(literal)), literal


# ---- end to end, in a loopback-only network namespace

PRIVATE_TARGETS = ["http://10.1.2.3/a.wav", "http://169.254.169.254/latest/meta-data", "http://192.168.0.1/x"]
NETNS_TARGETS = ["http://[64:ff9b::7f00:1]:{port}/a.wav", "http://[64:ff9b::a00:1]/a.wav",
                 "http://[2002:7f00:1::]:{port}/a.wav", "http://[2002:a00:1::]/a.wav",
                 "http://[::127.0.0.1]:{port}/a.wav", "http://[::a00:1]/a.wav",
                 "http://[::ffff:127.0.0.1]:{port}/a.wav", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a",
                 "http://100.64.0.1/a.wav", "http://224.0.0.1/a.wav", "http://255.255.255.255/a.wav",
                 "http://240.0.0.1/a.wav", "http://[ff02::1]/a.wav", "http://[64:ff9b:1::808:808]/a.wav",
                 "http://0.0.0.0:{port}/a.wav", "http://[::]:{port}/a.wav", "http://2130706433:{port}/a.wav",
                 *PRIVATE_TARGETS]


def _in_netns() -> bool:
    return os.environ.get("SPARK_TEST_NETNS") == "1"


def test_refused_targets_end_to_end_in_a_loopback_only_namespace(tmp_path):
    """Re-runs the *_inside tests below in `unshare -n` (only `lo`, brought up), as a subprocess."""
    if _in_netns():
        pytest.skip("already inside the namespace")
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("unshare or ip (iproute2) not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n is not permitted here: {probe.stderr.decode().strip()}")
    cmd = (f"ip link set lo up && exec {sys.executable} -m pytest -q -x -p no:cacheprovider "
           f"--basetemp={tmp_path / 'inner'} {__file__} -k inside")
    r = subprocess.run(["unshare", "-n", "sh", "-c", cmd], env={**os.environ, "SPARK_TEST_NETNS": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert re.search(r"\b2 passed", r.stdout), r.stdout[-2000:]


def _only_loopback() -> None:
    if not _in_netns():
        pytest.skip("runs only inside the loopback-only namespace (see the test above)")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], links


def test_fetch_url_refuses_inside(tmp_path):
    _only_loopback()
    from service.errors import ApiError
    from service.inputs import fetch_url
    for template in NETNS_TARGETS:
        url = template.format(port=8185)
        with pytest.raises(ApiError) as e:
            asyncio.run(fetch_url(url, tmp_path / "x", 1 << 20, 5.0, allow_private=False))
        assert (e.value.status, e.value.code) == (422, "url_refused"), (url, e.value.message)
        assert not (tmp_path / "x").exists()
    # Allowing private targets still refuses what is not one host.
    for url in ("http://0.0.0.0:8185/a", "http://[ff02::1]/a", "http://[64:ff9b::e000:1]/a"):
        with pytest.raises(ApiError) as e:
            asyncio.run(fetch_url(url, tmp_path / "x", 1 << 20, 5.0, allow_private=True))
        assert e.value.code == "url_refused" and "unicast" in e.value.message, url


def test_server_refuses_inside(tmp_path, vocals_pack):
    _only_loopback()
    from testkit.service import Server
    srv = Server(tmp_path / "data", vocals_pack).start()
    try:
        with srv.client() as c:
            for template in NETNS_TARGETS:
                url = template.format(port=srv.port)
                # /separate waits through the URL job's download step, so the refusal comes back as its answer
                r = c.post("/separate", json={"url": url})
                assert r.status_code == 422, (url, r.text)
                assert r.json()["error"] == "url_refused" and r.json()["field"] == "url", r.text
                if url in PRIVATE_TARGETS:  # refused by default only: the message names the operator's switch
                    assert "SPARK_ALLOW_PRIVATE_URLS" in r.json()["message"], r.text
                left = {p.name for p in (srv.data_dir / "jobs" / r.json()["job_id"]).iterdir()}
                assert left <= {"job.log"}, left  # nothing was fetched
            jobs = c.get("/jobs").json()["jobs"]
            assert len(jobs) == len(NETNS_TARGETS)
            assert all(j["state"] == "failed" and j["error"]["code"] == "url_refused" for j in jobs)
    finally:
        srv.stop()
