"""Weights by https URL: cap, pin, allow-list, redirects, private addresses, timeout (gan_models.urlfetch).

The "server" is plain HTTP on 127.0.0.1 in a thread (stopped after each test, and by a timer whatever happens).
It is reached only through the test-only transport (`urlfetch._TRANSPORT`: no TLS, fixed names for *.test hosts,
private addresses allowed); every test that checks a refusal of the defaults uses the real transport.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from gan_models import custom, urlfetch
from gan_models.archs import build_arch
from gan_models.errors import UnknownModelError, UnsupportedModelError, WeightsError, WeightsUnavailableError
from gan_models.pipeline import translator_for
from gan_models.settings import Settings
from gan_models.specs import get_spec
from tests.conftest import TINY_KWARGS, rgb_image

HOSTS = ("weights.test", "release.test")


class _Server:
    """Routes path -> (status, headers, body, delay_s); records (host, path) of every request."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append((self.headers.get("Host", "").split(":")[0], self.path))
                status, headers, body, delay = server.routes.get(self.path, (404, {}, b"no", 0.0))
                time.sleep(delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value.replace("PORT", str(server.port)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client stopped reading (the cap): fine
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.stopper = threading.Timer(60, self.httpd.shutdown)
        self.stopper.start()

    def url(self, path: str, host: str = "weights.test") -> str:
        return f"https://{host}:{self.port}{path}"

    def add(self, path: str, body: bytes, *, status: int = 200, length: int | None | str = "auto",
            headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        headers = dict(headers or {})
        if length == "auto":
            headers["Content-Length"] = str(len(body))
        elif length is not None:
            headers["Content-Length"] = str(length)
        self.routes[path] = (status, headers, body, delay)

    def close(self) -> None:
        self.stopper.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, tmp_path):
    """The fake host, reachable as weights.test / release.test / elsewhere.test over the test-only transport."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(urlfetch, "_TRANSPORT", urlfetch._Transport(
        tls=False, hosts={h: "127.0.0.1" for h in (*HOSTS, "elsewhere.test")}, public_only=False))
    custom.clear_cache()
    srv = _Server()
    yield srv
    srv.close()
    custom.clear_cache()


def _weights() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"params": build_arch("srvgg_compact", **TINY_KWARGS["srvgg_compact"]).state_dict()}, buffer)
    return buffer.getvalue()


def _fetch(url: str, tmp_path, **kwargs):
    options = {"allowed_hosts": HOSTS, "max_bytes": 1 << 20, "cache_dir": tmp_path / "dl", **kwargs}
    return urlfetch.fetch_url(url, **options)


def test_url_id_is_detected_loaded_run_and_cached(server, tmp_path):
    body = _weights()
    server.add("/releases/download/v1/tiny_x4.pth", body)
    url = server.url("/releases/download/v1/tiny_x4.pth")
    spec = get_spec(url, url_hosts=HOSTS)
    assert (spec.arch, spec.task, spec.scale, spec.id) == ("srvgg_compact", "upscale", 4, url)
    assert spec.title == "tiny_x4.pth" and spec.licence == "as stated by the publisher"
    assert spec.bundled is not None and spec.bundled.read_bytes() == body
    assert str(tmp_path / "cache" / "gan-studio" / "url") in str(spec.bundled)
    custom.clear_cache()  # the disk cache answers now: no second request
    assert get_spec(url, url_hosts=HOSTS) == spec and len(server.requests) == 1
    spec.bundled.unlink()  # dropped by the download cache's bound: the next resolution fetches it again
    assert get_spec(url, url_hosts=HOSTS) == spec and spec.bundled.is_file() and len(server.requests) == 2
    out = translator_for(spec, backend="torch", background=False)(rgb_image(8, 6))
    assert out.size == (32, 24)


def test_the_download_cache_keeps_the_most_recent_files(server, tmp_path, monkeypatch):
    monkeypatch.setattr(urlfetch, "CACHE_FILES", 2)
    for name in ("a", "b", "c"):
        server.add(f"/{name}.pth", name.encode() * 10)
    a = _fetch(server.url("/a.pth"), tmp_path)
    b = _fetch(server.url("/b.pth"), tmp_path)
    time.sleep(0.01)
    assert _fetch(server.url("/a.pth"), tmp_path) == a  # a cache hit, now the most recent
    time.sleep(0.01)
    c = _fetch(server.url("/c.pth"), tmp_path)
    assert a.is_file() and c.is_file() and not b.exists()
    assert sorted(p.name for p in (tmp_path / "dl").glob("*/*")) == ["a.pth", "c.pth"]


def test_sha256_pin_accepts_the_right_file_and_refuses_another(server, tmp_path):
    body = _weights()
    server.add("/w.pth", body)
    digest = hashlib.sha256(body).hexdigest()
    assert get_spec(server.url("/w.pth") + f"?sha256={digest.upper()}", url_hosts=HOSTS).arch == "srvgg_compact"
    custom.clear_cache()
    wrong = "0" * 64
    with pytest.raises(WeightsError, match=rf"/w\.pth: sha256 mismatch: the file's is {digest}, the id pins {wrong}"):
        _fetch(server.url("/w.pth"), tmp_path, sha256=wrong)
    assert not list((tmp_path / "dl").rglob("w.pth")), "a file that fails its pin is not kept"
    with pytest.raises(UnknownModelError, match="is not a sha256 digest"):
        get_spec(server.url("/w.pth") + "?sha256=abc", url_hosts=HOSTS)
    with pytest.raises(UnknownModelError, match="sha256=... pins a file fetched by URL"):
        get_spec(f"me/repo?sha256={digest}")


def test_content_length_over_the_cap_is_refused_before_the_body(server, tmp_path):
    server.add("/big.pth", b"x" * 100, length=900 << 20)
    with pytest.raises(UnsupportedModelError, match=r"/big\.pth: 900 MB is over this server's limit of 1 MB "
                                                    r"\(GAN_STUDIO_MAX_WEIGHTS_MB\); nothing was downloaded"):
        _fetch(server.url("/big.pth"), tmp_path)
    assert not [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]


@pytest.mark.parametrize("length", [None, 10], ids=["no-content-length", "content-length-says-10-bytes"])
def test_a_missing_or_lying_content_length_cannot_get_past_the_cap(server, tmp_path, length):
    server.add("/stream.pth", b"\x80" * (3 << 20), length=length)
    if length is None:  # read until the cap, then stopped and deleted
        with pytest.raises(UnsupportedModelError, match=r"sent more than 1 MB \(its Content-Length said nothing\); "
                                                        r"over this server's limit of 1 MB .* stopped and deleted"):
            _fetch(server.url("/stream.pth"), tmp_path)
        assert not [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]
    else:  # only the announced bytes are read: the rest never reaches the disk
        assert _fetch(server.url("/stream.pth"), tmp_path).stat().st_size == 10


def test_hosts_off_the_allow_list_are_refused_without_a_request(server, tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"host elsewhere\.test is not on this server's list of allowed "
                                                    r"hosts \(weights\.test, release\.test; GAN_STUDIO_URL_HOSTS\)"):
        _fetch(server.url("/w.pth", host="elsewhere.test"), tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"none: URLs are switched off"):
        _fetch(server.url("/w.pth"), tmp_path, allowed_hosts=())
    assert server.requests == []


def test_redirects_are_followed_within_the_list_and_refused_outside_it(server, tmp_path):
    body = _weights()
    server.add("/final.pth", body)
    server.add("/moved.pth", b"", status=302, headers={"Location": "https://release.test:PORT/final.pth"})
    assert _fetch(server.url("/moved.pth"), tmp_path).read_bytes() == body
    assert server.requests == [("weights.test", "/moved.pth"), ("release.test", "/final.pth")]
    server.add("/away.pth", b"", status=302, headers={"Location": "https://elsewhere.test:PORT/final.pth"})
    with pytest.raises(UnsupportedModelError, match=r"/away\.pth: redirects to elsewhere\.test, which is not on this "
                                                    r"server's list of allowed hosts"):
        _fetch(server.url("/away.pth"), tmp_path)
    server.add("/downgrade.pth", b"", status=301, headers={"Location": "http://release.test:PORT/final.pth"})
    with pytest.raises(UnsupportedModelError, match=r"only https URLs are fetched \(a redirect leads to http://\)"):
        _fetch(server.url("/downgrade.pth"), tmp_path)
    assert ("elsewhere.test", "/final.pth") not in server.requests
    server.add("/loop.pth", b"", status=302, headers={"Location": "/loop.pth"})
    with pytest.raises(UnsupportedModelError, match=r"more than 5 redirects; refused"):
        _fetch(server.url("/loop.pth"), tmp_path)


def test_private_and_loopback_addresses_are_refused_after_resolution(server, tmp_path, monkeypatch):
    server.add("/w.pth", _weights())
    monkeypatch.setattr(urlfetch, "_TRANSPORT", urlfetch._Transport(tls=False, hosts={"weights.test": "10.1.2.3"}))
    with pytest.raises(UnsupportedModelError, match=r"weights\.test resolves to a private address \(10\.1\.2\.3\); "
                                                    r"only public addresses are contacted"):
        _fetch(server.url("/w.pth"), tmp_path)
    monkeypatch.setattr(urlfetch, "_TRANSPORT", urlfetch._Transport())  # the real one: real DNS, TLS
    with pytest.raises(UnsupportedModelError, match=r"localhost resolves to a loopback address"):
        _fetch(f"https://localhost:{server.port}/w.pth", tmp_path, allowed_hosts=("localhost",))
    for address, kind in (("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("192.168.1.1", "private")):
        with pytest.raises(UnsupportedModelError, match=rf"resolves to a {kind} address"):
            _fetch(f"https://{address}/w.pth", tmp_path, allowed_hosts=(address,))
    assert server.requests == []


def test_a_silent_server_times_out(server, tmp_path):
    server.add("/slow.pth", b"x", delay=2.0)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"/slow\.pth: cannot fetch from weights\.test \(timed out\)"):
        _fetch(server.url("/slow.pth"), tmp_path, timeout_s=0.3)
    assert time.monotonic() - started < 1.5


def test_plain_http_and_credentials_are_refused(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"http://github\.com/x/y\.pth: only https URLs are fetched$"):
        _fetch("http://github.com/x/y.pth", tmp_path, allowed_hosts=Settings.url_hosts)
    with pytest.raises(UnsupportedModelError, match="URLs with a user name or password are refused"):
        _fetch("https://me:secret@github.com/x/y.pth", tmp_path, allowed_hosts=Settings.url_hosts)


def test_default_allow_list_covers_release_assets_and_the_hub():
    hosts = Settings().url_hosts
    for host in ("github.com", "objects.githubusercontent.com", "release-assets.githubusercontent.com",
                 "huggingface.co", "cdn-lfs.huggingface.co", "cas-bridge.xethub.hf.co"):
        assert urlfetch._allowed(host, hosts), host
    for host in ("evilgithub.com", "github.com.evil.org", "raw.githubusercontent.com", "localhost"):
        assert not urlfetch._allowed(host, hosts), host
    assert Settings.from_env({"GAN_STUDIO_URL_HOSTS": "Example.org, github.com"}).url_hosts == ("example.org",
                                                                                                "github.com")
    assert Settings.from_env({"GAN_STUDIO_URL_HOSTS": "none"}).url_hosts == ()
