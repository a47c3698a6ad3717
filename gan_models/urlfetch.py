"""Weights by URL, fetched safely for a public server: URL + limits in, a local cached file out.

    path = fetch_url("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                     allowed_hosts=settings.url_hosts, max_bytes=500 << 20, cache_dir=user_cache_dir() / "url")

Many well-known generators are release assets rather than Hub files. A visitor may name one, so every request is
held to the same rules:

- https only, to a host on the allow-list (an entry also covers its subdomains: `huggingface.co` covers
  `cdn-lfs.huggingface.co`); no user:password in the URL;
- redirects are followed by hand (at most MAX_REDIRECTS), and each hop is checked like the first: a redirect to a
  host off the list is refused, not followed;
- the host name is resolved once per hop and EVERY address it resolves to must be public (no private, loopback,
  link-local, multicast, reserved or unspecified address: no reaching the server's own network by DNS tricks); the
  connection goes to the address that was checked, with TLS verified for the host name;
- the size cap is checked on Content-Length before the body is read, and again while streaming (a missing or
  lying Content-Length cannot get more than `max_bytes` onto the disk);
- a timeout for connecting and for each read, and an overall deadline;
- an optional sha256 pin: a file whose digest differs is deleted, not used.

Downloads are cached under `cache_dir/<sha256 of the URL>/<file name>` (written to a temporary name and renamed,
so a failed download leaves nothing): the same URL is fetched once. The cache keeps the CACHE_FILES most recently
used files (so visitors naming many URLs use at most CACHE_FILES x max_bytes of disk). Every refusal is one line
naming the URL.

Tests reach a plain-HTTP server on 127.0.0.1 only by replacing `_TRANSPORT` (a test-only hook: the defaults are
never weakened; see tests/test_urlfetch.py).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from .errors import UnsupportedModelError, WeightsError, WeightsUnavailableError, first_line

MAX_REDIRECTS = 5
CACHE_FILES = 8
TIMEOUT_S = 20.0  # connect and each read
DEADLINE_S = 900.0  # the whole download, redirects included
_CHUNK = 1 << 20
_REDIRECTS = (301, 302, 303, 307, 308)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class _Transport:
    """How bytes move. Outside tests: TLS, real DNS, public addresses only. Tests swap in a plain-HTTP transport
    with fixed name resolution (module docstring); nothing else changes between the two."""

    tls: bool = True
    hosts: Mapping[str, str] = field(default_factory=dict)  # test-only name -> address
    public_only: bool = True


_TRANSPORT = _Transport()


def check_sha256(value: str) -> str:
    """`value` as a lower-case sha256 hex digest.

    Raises:
        UnsupportedModelError: not 64 hex digits.
    """
    digest = value.strip().lower()
    if not _SHA256.match(digest):
        raise UnsupportedModelError(f"sha256={value!r} is not a sha256 digest (64 hex digits)")
    return digest


def fetch_url(url: str, *, allowed_hosts: Sequence[str], max_bytes: int, cache_dir: str | Path,
              sha256: str | None = None, timeout_s: float = TIMEOUT_S) -> Path:
    """The local file behind `url`: from the download cache, else downloaded under the rules above.

    Parameters:
        url: an https URL (the model id without its `#network` and `?options`).
        allowed_hosts: hosts that may be contacted (Settings.url_hosts); empty refuses every URL.
        max_bytes: largest file accepted (checked before the body and while streaming).
        cache_dir: where downloads are kept.
        sha256: the file's expected digest, or None.

    Raises:
        UnsupportedModelError: a URL or answer refused by the rules (scheme, host, address, redirect, size).
        WeightsError: the file's sha256 differs from the pin.
        WeightsUnavailableError: the host cannot be reached, times out, or answers with an error.
    """
    pin = check_sha256(sha256) if sha256 is not None else None
    _check_url(url, allowed_hosts, url)
    target = Path(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:32] / _file_name(url)
    if target.is_file():
        size = target.stat().st_size
        if size > max_bytes:
            raise UnsupportedModelError(_over_cap(url, size, max_bytes, downloaded=True))
        if pin is None or _digest(target) == pin:
            target.touch()  # recently used: kept by the pruning
            return target
        target.unlink()  # a file pinned differently earlier, or damaged: fetch again and check
    target.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + DEADLINE_S
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        response = _request(current, allowed_hosts, url, timeout_s)
        try:
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise WeightsUnavailableError(f"{url}: HTTP {response.status} redirect without a Location")
                current = urljoin(current, location)
                _check_url(current, allowed_hosts, url)
                continue
            if response.status != 200:
                raise WeightsUnavailableError(f"{url}: HTTP {response.status} {response.reason}".rstrip())
            _stream(response, target, url=url, max_bytes=max_bytes, pin=pin, deadline=deadline)
            _prune(Path(cache_dir), keep=CACHE_FILES)
            return target
        finally:
            response.close()
    raise UnsupportedModelError(f"{url}: more than {MAX_REDIRECTS} redirects; refused")


def _check_url(url: str, allowed_hosts: Sequence[str], shown: str) -> None:
    """Refuse a URL (the first or a redirect's) that breaks the scheme, credential or host rules."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise UnsupportedModelError(f"{shown}: only https URLs are fetched" + (
            f" (a redirect leads to {parts.scheme}://)" if url != shown else ""))
    if parts.username is not None or parts.password is not None:
        raise UnsupportedModelError(f"{shown}: URLs with a user name or password are refused")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsupportedModelError(f"{shown}: no host in the URL")
    if not _allowed(host, allowed_hosts):
        hop = f"redirects to {host}, which" if url != shown else f"host {host}"
        listed = ", ".join(allowed_hosts) or "none: URLs are switched off"
        raise UnsupportedModelError(f"{shown}: {hop} is not on this server's list of allowed hosts ({listed}; "
                                    "GAN_STUDIO_URL_HOSTS)")


def _allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    return any(host == entry or host.endswith("." + entry) for entry in (h.strip().lower() for h in allowed_hosts)
               if entry)


def _public_address(host: str, port: int, shown: str) -> str:
    """One address of `host` after checking every address it resolves to."""
    transport = _TRANSPORT
    if host in transport.hosts:
        addresses = [transport.hosts[host]]
    else:
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:
            addresses = _resolve(host, port, shown)
    if transport.public_only:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                kind = ("loopback" if ip.is_loopback else "link-local" if ip.is_link_local else
                        "private" if ip.is_private else "non-public")
                raise UnsupportedModelError(f"{shown}: {host} resolves to a {kind} address ({address}); only "
                                            "public addresses are contacted")
    return addresses[0]


def _resolve(host: str, port: int, shown: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WeightsUnavailableError(f"{shown}: cannot resolve {host} ({first_line(exc)})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _Pinned:
    """A connection to the address that was checked, not to whatever the name resolves to a moment later."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float, **kwargs) -> None:
        super().__init__(host, port, timeout=timeout, **kwargs)  # type: ignore[call-arg]
        self._address = address

    def _socket(self) -> socket.socket:
        return socket.create_connection((self._address, self.port), self.timeout)  # type: ignore[attr-defined]


class _PinnedHTTPS(_Pinned, http.client.HTTPSConnection):
    def connect(self) -> None:
        self.sock = self._context.wrap_socket(self._socket(), server_hostname=self.host)


class _PinnedHTTP(_Pinned, http.client.HTTPConnection):  # the test transport only
    def connect(self) -> None:
        self.sock = self._socket()


def _request(url: str, allowed_hosts: Sequence[str], shown: str, timeout_s: float) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or 443
    address = _public_address(host, port, shown)
    if _TRANSPORT.tls:
        connection: http.client.HTTPConnection = _PinnedHTTPS(
            host, port, address=address, timeout=timeout_s, context=ssl.create_default_context())
    else:
        connection = _PinnedHTTP(host, port, address=address, timeout=timeout_s)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("GET", path, headers={"User-Agent": "gan-studio", "Accept-Encoding": "identity"})
        return connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise WeightsUnavailableError(f"{shown}: cannot fetch from {host} ({_reason(exc)})") from exc


def _stream(response: http.client.HTTPResponse, target: Path, *, url: str, max_bytes: int, pin: str | None,
            deadline: float) -> None:
    """The body into `target` (atomically), within the cap and the deadline, checked against the pin."""
    announced = response.getheader("Content-Length")
    if announced is not None and announced.strip().isdigit() and int(announced) > max_bytes:
        raise UnsupportedModelError(_over_cap(url, int(announced), max_bytes, downloaded=False))
    digest = hashlib.sha256()
    total = 0
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := response.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise UnsupportedModelError(f"{url}: sent more than {_mb(max_bytes)} MB (its Content-Length "
                                                f"said {announced or 'nothing'}); over this server's limit of "
                                                f"{_mb(max_bytes)} MB (GAN_STUDIO_MAX_WEIGHTS_MB); stopped and "
                                                "deleted")
                if time.monotonic() > deadline:
                    raise WeightsUnavailableError(f"{url}: download took longer than {DEADLINE_S:.0f} s; stopped")
                digest.update(chunk)
                out.write(chunk)
        if total == 0:
            raise WeightsUnavailableError(f"{url}: the server sent an empty file")
        if pin is not None and digest.hexdigest() != pin:
            raise WeightsError(f"{url}: sha256 mismatch: the file's is {digest.hexdigest()}, the id pins {pin}; "
                               "not used")
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException) as exc:
        raise WeightsUnavailableError(f"{url}: download interrupted ({_reason(exc)})") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prune(cache_dir: Path, *, keep: int) -> None:
    """Delete all but the `keep` most recently used downloads (and their folders)."""
    files = sorted((p for p in cache_dir.glob("*/*") if p.is_file() and not p.name.startswith(".part-")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)
        try:
            old.parent.rmdir()
        except OSError:  # another download is writing there
            pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes"
    return f"{type(exc).__name__}: {first_line(exc, limit=120)}"


def _file_name(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return re.sub(r"[^\w.-]+", "-", name).strip(".-")[:100] or "weights"


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f}"


def _over_cap(url: str, size: int, max_bytes: int, *, downloaded: bool) -> str:
    return (f"{url}: {_mb(size)} MB is over this server's limit of {_mb(max_bytes)} MB (GAN_STUDIO_MAX_WEIGHTS_MB)"
            + ("" if downloaded else "; nothing was downloaded"))


__all__ = ["CACHE_FILES", "DEADLINE_S", "MAX_REDIRECTS", "TIMEOUT_S", "check_sha256", "fetch_url"]
