"""Model references: the one parser and printer of a custom model id. Plain, frozen, picklable data; no I/O
except asking whether a local path exists.

Id syntax (docs/custom-models.md has examples):

    [spaces/|models/]owner/name[/path/to/file.ext][@revision][#network][?option=value&...]
    https://host/path/file.ext[#network][?sha256=HEX&option=value&...]   a file by URL (gan_models.urlfetch)
    path/to/file.ext[#network][?option=value&...]          a local file (or a folder holding one weights file)

- `owner/name` alone: a repo written by `train.py --push-to-hub` (config.json + model.safetensors), else the
  repo's one weights file (one .safetensors wins over other formats).
- `#network`: one generator of a file that holds several (CycleGAN training files: `#G_A`, `#G_B`, `#netG_A`).
- options: `range=0,1` (value range of the network's pixels), `task=style|sketch2photo|upscale`, `tile=256|none`,
  `multiple=N` (input size multiple), `scale=N` (only when detection is wrong); for URLs `sha256=HEX` pins the
  file's digest. A URL's own query string cannot be given (`?` starts the options).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UnknownModelError, UnsupportedModelError
from .urlfetch import check_sha256

WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".pth.tar")
OPTIONS = ("range", "task", "tile", "multiple", "scale", "sha256")
_NAME = r"[A-Za-z0-9][\w.-]{0,95}"
_HUB_ID = re.compile(rf"^(?:(?P<kind>spaces|models)/)?(?P<repo>{_NAME}/{_NAME})(?:/(?P<file>[^@]+?))?"
                     r"(?:@(?P<rev>[\w.-]+))?$")
_SYNTAX = ("a Hub id [spaces/]owner/name[/file.pth][@revision][#network][?range=0,1], "
           "an https URL of a weights file [#network][?sha256=HEX], or a local weights file or folder")

Options = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ModelRef:
    """A parsed custom model id; `str(ref)` prints it back (`parse_model_ref(str(ref)) == ref`).

    Parameters:
        text: the id as given (the spec's id); left out of comparisons, since several texts name one model.
        local: the local file or folder, or None for the Hub.
        url: the https URL of the weights file (without #network and ?options), or None.
        repo_id, repo_type, filename, revision: the Hub location (filename None: the repo decides).
        network: the generator chosen in a file holding several ("G_B"), or None.
        options: user overrides as (name, value) pairs in the order given (see module docstring); a mapping is
            accepted too.
    """

    text: str = dataclasses.field(default="", compare=False)
    local: Path | None = None
    repo_id: str | None = None
    repo_type: str = "model"
    filename: str | None = None
    revision: str | None = None
    network: str | None = None
    options: Options = ()
    url: str | None = None

    def __post_init__(self) -> None:
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple((str(k), str(v)) for k, v in pairs))
        if not self.text:
            object.__setattr__(self, "text", str(self))

    @property
    def where(self) -> str:
        """The file or repo, without #network and ?options ('spaces/me/repo/net.pth@v1', '/data/x.pth')."""
        if self.local is not None:
            return str(self.local)
        if self.url is not None:
            return self.url
        kind = "spaces/" if self.repo_type == "space" else ""
        return f"{kind}{self.repo_id}" + (f"/{self.filename}" if self.filename else "") + (
            f"@{self.revision}" if self.revision else "")

    def hub_where(self, filename: str) -> str:
        """'spaces/owner/name/filename': one file of the repo, for messages."""
        return f"{'spaces/' if self.repo_type == 'space' else ''}{self.repo_id}/{filename}"

    def __str__(self) -> str:
        return join_id(self.where, self.network, "&".join(f"{k}={v}" for k, v in self.options))


def split_id(text: str) -> tuple[str, str | None, str]:
    """'me/repo/x.pth#G_B?range=0,1' → ('me/repo/x.pth', 'G_B', 'range=0,1'): the one place that cuts an id."""
    base, _, query = text.partition("?")
    base, _, network = base.partition("#")
    return base, network or None, query


def join_id(base: str, network: str | None, query: str) -> str:
    """The inverse of `split_id`."""
    return base + (f"#{network}" if network else "") + (f"?{query}" if query else "")


def parse_model_ref(text: str, *, allow_local: bool = True, known: Iterable[str] = ()) -> ModelRef:
    """Parse a custom model id (module docstring) without touching the network.

    Parameters:
        allow_local: False treats every id as a Hub id and never looks at this machine's files (what a public
            app must do with text its visitors type; their uploads are local paths the app itself passes).
        known: the curated ids, named in the message of an id that is neither a path nor a Hub id.

    Raises:
        UnknownModelError: neither an existing local path nor a Hub id; the message gives the syntax and `known`.
    """
    if allow_local and Path(text).expanduser().exists():  # a file whose name holds '#' or '?'
        return ModelRef(text=text, local=Path(text).expanduser().resolve())
    base, network, query = split_id(text)
    options: list[tuple[str, str]] = []
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key not in OPTIONS or not sep:
            raise UnknownModelError(f"{text!r}: unknown option {item!r}; valid: "
                                    + ", ".join(f"{o}=..." for o in OPTIONS))
        options.append((key, value))
    if re.match(r"^[a-z][a-z0-9+.-]*://", base, re.IGNORECASE):  # fetch_url refuses what is not https
        try:
            options = [(k, check_sha256(v) if k == "sha256" else v) for k, v in options]
        except UnsupportedModelError as exc:
            raise UnknownModelError(f"{text!r}: {exc}") from None
        return ModelRef(text=text, network=network, options=tuple(options), url=base)
    if any(k == "sha256" for k, _ in options):
        raise UnknownModelError(f"{text!r}: sha256=... pins a file fetched by URL; Hub revisions pin with @commit")
    common = {"text": text, "network": network, "options": tuple(options)}
    path = Path(base).expanduser()
    if allow_local and base and path.exists():
        return ModelRef(local=path.resolve(), **common)
    looks_local = base.startswith(("/", "./", "../", "~")) or "\\" in base
    match = None if looks_local else _HUB_ID.match(base)
    if match is None:
        where = ("no such local file or folder" if allow_local else "local files are not accepted here") if (
            looks_local) else ""
        choices = f"choose one of: {', '.join(known)}; or give " if known else "give "
        raise UnknownModelError(f"unknown model {text!r}; {choices}"
                                + (_SYNTAX if allow_local else _SYNTAX.split(", or a local")[0])
                                + (f" ({where})" if where else ""))
    filename = match["file"]
    if filename is not None and not filename.endswith(WEIGHTS_SUFFIXES):
        raise UnknownModelError(f"{text!r}: {filename!r} is not a weights file; expected one of "
                                f"{', '.join(WEIGHTS_SUFFIXES)}")
    if filename is not None and {".", ".."} & set(filename.split("/")):
        raise UnknownModelError(f"{text!r}: '.' and '..' are not allowed in a Hub file path")
    return ModelRef(repo_id=match["repo"], repo_type="space" if match["kind"] == "spaces" else "model",
                    filename=filename, revision=match["rev"], **common)


def file_safe_name(model_id: str) -> str:
    """A short name for output files: curated ids unchanged, custom ids by their last part
    ('me/repo/net_G.pth#G_B?range=0,1' → 'net_G-G_B', '/data/x4.safetensors' → 'x4')."""
    base, network, _ = split_id(model_id)
    name = Path(base).name
    for suffix in sorted(WEIGHTS_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^\w.-]+", "-", name + (f"-{network}" if network else "")).strip("-.") or "model"
