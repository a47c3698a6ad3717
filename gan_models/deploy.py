"""Hugging Face Spaces: publish this checkout as a Space, and run well on one.

    python -m gan_models space OWNER/NAME --dry-run                  # the plan: files, sizes, problems
    python -m gan_models space OWNER/NAME [--hardware zero-a10g] [--private]

Publishing uploads an allow-list, never the whole folder: `app.py`, the local packages it imports (followed through
their imports, e.g. `gan_models/`), `weights/*.safetensors` + `weights/MANIFEST.json`, the example images, the
`docs/` pages and their images (the README links to them), `requirements.txt`, `README.md` (whose YAML front matter
is the Space's configuration; its `thumbnail:` path becomes the file's URL in the Space) and `.gitattributes`.
Before anything is sent, `check_space` lists, one line each, what a Space build or the Hub would refuse, including
a link in the uploaded pages to a file that is not uploaded.

The front matter's `preload_from_hub` lists the curated models' Hub files (`preload_entries`): the Space downloads
them at build time into the default Hugging Face cache, so no visitor waits for them (and, on ZeroGPU, no GPU time
is spent downloading).

On a Space, `app.py` calls (see docs/deployment.md):
- `use_persistent_storage()` first: the ONNX cache, and the Hub cache for files downloaded at run time, move to
  `/data` when the Space has storage there; the preloaded files stay where the build put them and are linked in;
- `gan_models.zerogpu` on ZeroGPU: models load on the CPU, `@spaces.GPU` calls run them on CUDA.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GanModelsError, first_line
from .imaging import IMAGE_SUFFIXES
from .settings import ENV, hub_cache_dir, hub_offline, process_environ
from .specs import SPECS, ModelSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
# The Hub refuses a pushed file over 10 MB, or any binary file, unless LFS/Xet stores it (a .gitattributes rule).
HUB_MAX_PLAIN_BYTES = 10_000_000
# Colours the Space card accepts (Hub configuration reference) and its short_description limit.
SPACE_COLORS = frozenset({"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"})
SHORT_DESCRIPTION_MAX = 60
ROOT_FILES = ("app.py", "README.md", "requirements.txt", ".gitattributes")
# (folder, glob): data the app reads at run time; code is found by following app.py's imports.
DATA_GLOBS = (("weights", "*.safetensors"), ("weights", "MANIFEST.json"),
              *(("examples", f"*{suffix}") for suffix in sorted(IMAGE_SUFFIXES)),
              ("docs", "*.md"), *(("docs", f"*{suffix}") for suffix in sorted(IMAGE_SUFFIXES)))
# A Markdown link or image: [text](target) / ![alt](target); the target up to a space or ')'.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Left out (and counted in the plan): bytecode and tool caches are rebuilt wherever the code runs.
CACHE_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".ipynb_checkpoints"})
CACHE_SUFFIXES = frozenset({".pyc", ".pyo"})
# Refused: files inside an uploaded package that must never leave this machine, or that the Space rebuilds itself.
# (Python modules are exempt from the name test: `tokenizer.py` is code, not a token.)
SECRET_PATTERNS = (".env", ".env.*", "*.env", ".netrc", ".git-credentials", "*token*", "*secret*", "credentials*",
                   "*.pem", "*.key", "id_rsa*", "id_ed25519*")
BUILD_PATTERNS = ("*.onnx", "*.onnx.data", "*.ckpt", "checkpoint.pt")
BUILD_DIRS = frozenset({"runs", "outputs", "flagged", ".gradio", ".cache"})
# Folders of a Hugging Face Hub cache that hold one repository each.
HUB_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


# --- the plan: which files a Space gets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SpaceFile:
    """One file to upload.

    Parameters:
        path: POSIX path relative to the checkout root (also its path in the Space).
        size: bytes.
        binary: git's test: a NUL byte in the first 8000 bytes.
        lfs: a `.gitattributes` rule stores it in LFS/Xet.
    """

    path: str
    size: int
    binary: bool
    lfs: bool


@dataclass(frozen=True)
class SpacePlan:
    """What `publish_space` would upload from `root`, and the cache files it leaves out."""

    root: Path
    files: tuple[SpaceFile, ...]
    left_out: tuple[str, ...]

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def lfs_patterns(gitattributes: Path) -> list[tuple[str, bool]]:
    """(pattern, stored in LFS) per line of a .gitattributes file, in file order (the last match wins)."""
    rules: list[tuple[str, bool]] = []
    if not gitattributes.is_file():
        return rules
    for line in gitattributes.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        for attr in parts[1:]:
            if attr == "filter=lfs":
                rules.append((parts[0], True))
            elif attr in ("-filter", "!filter") or (attr.startswith("filter=") and attr != "filter=lfs"):
                rules.append((parts[0], False))
    return rules


def _gitattr_match(pattern: str, path: str) -> bool:
    """gitattributes matching: a pattern without '/' matches the file name at any depth; otherwise the whole path,
    with '*' stopping at '/' and '**' crossing it."""
    if "/" not in pattern.rstrip("/"):
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    regex = re.escape(pattern.lstrip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.fullmatch(regex, path) is not None


def is_lfs(path: str, rules: list[tuple[str, bool]]) -> bool:
    tracked = False
    for pattern, lfs in rules:
        if _gitattr_match(pattern, path):
            tracked = lfs
    return tracked


def _is_binary(path: Path) -> bool:
    with path.open("rb") as fh:
        return b"\0" in fh.read(8000)


def _is_cache(rel: Path) -> bool:
    return any(part in CACHE_DIRS for part in rel.parts) or rel.suffix in CACHE_SUFFIXES


def _local_imports(source: Path, root: Path) -> set[str]:
    """Top-level names of the checkout's own modules and packages that `source` imports (at any depth, including
    imports inside functions: the library imports `export` lazily)."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise GanModelsError(f"{source.relative_to(root)} cannot be parsed: {first_line(exc)}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if (root / n / "__init__.py").is_file() or (root / f"{n}.py").is_file()}


def _code_files(root: Path, app_file: str) -> tuple[list[Path], list[str]]:
    """app_file plus every local module or package reachable through imports (packages whole, caches left out)."""
    files: list[Path] = [root / app_file]
    left_out: list[str] = []
    seen: set[str] = set()
    queue = [root / app_file]
    while queue:
        for name in sorted(_local_imports(queue.pop(), root) - seen):
            seen.add(name)
            if (root / name / "__init__.py").is_file():
                for path in sorted(p for p in (root / name).rglob("*") if p.is_file()):
                    rel = path.relative_to(root)
                    if _is_cache(rel):
                        left_out.append(rel.as_posix())
                        continue
                    files.append(path)
                    if path.suffix == ".py":
                        queue.append(path)
            else:
                files.append(root / f"{name}.py")
                queue.append(root / f"{name}.py")
    return files, left_out


def plan_space(root: Path = REPO_ROOT, *, app_file: str = "app.py") -> SpacePlan:
    """The files a Space needs from the checkout at `root` (see the module docstring for the allow-list).

    Raises:
        GanModelsError: `app_file` is missing, or a Python file cannot be parsed.
    """
    root = Path(root).resolve()
    if not (root / app_file).is_file():
        raise GanModelsError(f"{root / app_file} not found: run this from a checkout of the studio (or pass --root)")
    code, left_out = _code_files(root, app_file)
    data = [p for folder, pattern in DATA_GLOBS for p in sorted((root / folder).glob(pattern)) if p.is_file()]
    extra = [root / name for name in ROOT_FILES if (root / name).is_file()]
    rules = lfs_patterns(root / ".gitattributes")
    files: dict[str, SpaceFile] = {}
    for path in [*code, *data, *extra]:
        rel = path.relative_to(root).as_posix()
        files[rel] = SpaceFile(path=rel, size=path.stat().st_size, binary=_is_binary(path), lfs=is_lfs(rel, rules))
    return SpacePlan(root=root, files=tuple(files[k] for k in sorted(files)), left_out=tuple(left_out))


# --- the checks: what the Hub or a Space build would refuse -------------------------------------------------------


def read_front_matter(readme: Path) -> dict[str, Any]:
    """The YAML block between the first two `---` lines of README.md (the Space configuration).

    Raises:
        GanModelsError: no front matter, or YAML that does not parse to a mapping.
    """
    import yaml

    if not readme.is_file():
        raise GanModelsError(f"{readme.name} not found: a Space is configured by the YAML block at its top")
    text = readme.read_text(encoding="utf-8")
    match = re.match(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*\r?\n", text, re.S)
    if match is None:
        raise GanModelsError(f"{readme.name} has no YAML front matter (a block between two '---' lines at the top)")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise GanModelsError(f"{readme.name}: its front matter is not valid YAML: {first_line(exc)}") from None
    if not isinstance(meta, dict):
        raise GanModelsError(f"{readme.name}: its front matter is not a mapping of keys to values")
    return meta


def pinned_version(requirements: Path, package: str) -> str | None:
    """The `package==X` pin in a requirements file, or None."""
    if not requirements.is_file():
        return None
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.match(rf"^\s*{re.escape(package)}(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)", line, re.I)
        if match:
            return match.group(1)
    return None


def _hub_repos(spec: ModelSpec) -> list[tuple[str, str]]:
    """(repo_id, repo_type) of every Hub repo `spec` may read; a spec with several sources lists them in `sources`."""
    sources = getattr(spec, "sources", None) or [spec]
    return [(s.repo_id, s.repo_type) for s in sources if s.repo_id]


def hub_model_repos(specs: Mapping[str, ModelSpec]) -> set[str]:
    """Hub model repos the specs download from: what the front matter's `models:` should list (Spaces that host
    checkpoints cannot be listed there)."""
    return {repo for s in specs.values() for repo, kind in _hub_repos(s) if kind == "model"}


def preload_entries(specs: Mapping[str, ModelSpec]) -> list[str]:
    """The front matter's `preload_from_hub` for the Hub model files the specs download, pinned as the specs pin
    them: one "owner/name file[,file...][ revision]" per repository and revision (a revision other than main is
    written; main is the Space build's default). Files in Space repos cannot be preloaded: they download on first
    use, in the main process (never inside a ZeroGPU call)."""
    files: dict[tuple[str, str], set[str]] = {}
    for spec in specs.values():
        for source in getattr(spec, "sources", None) or [spec]:
            if source.repo_id and source.repo_type == "model":
                revision = "" if source.revision in (None, "main") else source.revision
                files.setdefault((source.repo_id, revision), set()).add(source.filename)
    return [f"{repo} {','.join(sorted(names))}" + (f" {revision}" if revision else "")
            for (repo, revision), names in sorted(files.items())]


def check_front_matter(
    meta: Mapping[str, Any],
    *,
    gradio_version: str,
    pinned_gradio: str | None,
    specs: Mapping[str, ModelSpec],
    files: Iterable[str],
) -> list[str]:
    """Problems with a Space's README front matter, one line each (empty: valid)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problems: list[str] = []
    if meta.get("sdk") != "gradio":
        problems.append(f"README.md: sdk is {meta.get('sdk')!r}; this app needs sdk: gradio")
    version = meta.get("sdk_version")
    if not isinstance(version, str):
        problems.append(f"README.md: sdk_version must be a quoted version string such as \"{gradio_version}\", "
                        f"not {version!r}")
    else:
        if version != gradio_version:
            problems.append(f"README.md: sdk_version {version} is not the installed Gradio {gradio_version} (the "
                            "version the app and its tests run on here)")
        if pinned_gradio and version != pinned_gradio:
            problems.append(f"README.md: sdk_version {version} differs from requirements.txt's gradio=="
                            f"{pinned_gradio}; the Space would install one over the other")
    python = meta.get("python_version")
    if python is not None and not (isinstance(python, str) and re.fullmatch(r"3\.\d+(\.\d+)?", python)):
        problems.append(f"README.md: python_version must be a quoted string such as \"3.11\", not {python!r} "
                        "(unquoted 3.10 reads as the number 3.1)")
    app_file = meta.get("app_file")
    if not isinstance(app_file, str) or app_file not in set(files):
        problems.append(f"README.md: app_file {app_file!r} is not among the uploaded files; use app_file: app.py")
    if not isinstance(meta.get("title"), str) or not meta["title"].strip():
        problems.append("README.md: title is missing")
    for key in ("colorFrom", "colorTo"):
        if key in meta and meta[key] not in SPACE_COLORS:
            problems.append(f"README.md: {key} {meta[key]!r} is not one of {', '.join(sorted(SPACE_COLORS))}")
    short = meta.get("short_description")
    if short is not None and (not isinstance(short, str) or len(short) > SHORT_DESCRIPTION_MAX):
        problems.append(f"README.md: short_description must be at most {SHORT_DESCRIPTION_MAX} characters "
                        f"(has {len(str(short))})")
    listed = meta.get("models") or []
    if not isinstance(listed, list):
        problems.append("README.md: models must be a list of Hub model ids")
        listed = []
    for repo in listed:
        try:
            validate_repo_id(str(repo))
            if "/" not in str(repo):
                raise HFValidationError("no owner")
        except HFValidationError:
            problems.append(f"README.md: models entry {repo!r} is not a Hub model id (owner/name)")
    wanted = hub_model_repos(specs)
    for repo in sorted(wanted - set(map(str, listed))):
        users = ", ".join(s.id for s in specs.values() if (repo, "model") in _hub_repos(s))
        problems.append(f"README.md: models lacks {repo} (downloaded by {users})")
    for repo in sorted(set(map(str, listed)) - wanted):
        problems.append(f"README.md: models lists {repo}, which no model spec downloads")
    preload, expected = meta.get("preload_from_hub") or [], preload_entries(specs)
    if not isinstance(preload, list):
        problems.append("README.md: preload_from_hub must be a list of 'owner/name file[,file...][ revision]'")
        preload = []
    for entry in sorted(set(expected) - set(map(str, preload))):
        problems.append(f"README.md: preload_from_hub lacks '{entry}' (otherwise the first visitor waits for it)")
    for entry in sorted(set(map(str, preload)) - set(expected)):
        problems.append(f"README.md: preload_from_hub has '{entry}', which no model spec reads as written")
    hardware = meta.get("suggested_hardware")
    if hardware is not None and hardware not in _hardware_choices():
        problems.append(f"README.md: suggested_hardware {hardware!r} is not a Space hardware flavour "
                        f"({', '.join(_hardware_choices())})")
    tags = meta.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) and t for t in tags)):
        problems.append("README.md: tags must be a list of words")
    thumbnail = meta.get("thumbnail")
    if thumbnail is not None and not (isinstance(thumbnail, str) and (thumbnail.startswith("https://")
                                                                      or thumbnail in set(files))):
        problems.append(f"README.md: thumbnail {thumbnail!r} is neither an https URL nor an uploaded image")
    return problems


def markdown_links(text: str) -> list[str]:
    """The targets of the Markdown links and images in `text`."""
    return MARKDOWN_LINK.findall(text)


def dead_links(plan: SpacePlan) -> list[str]:
    """Relative links in the uploaded Markdown pages whose target is not uploaded (a 404 on the Space), one line
    each; absolute links (https:, mailto:) and anchors are not checked."""
    uploaded = set(plan.paths)
    problems: list[str] = []
    for page in (p for p in plan.paths if p.endswith(".md")):
        for target in markdown_links((plan.root / page).read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if not path or re.match(r"[A-Za-z][\w+.-]*:", target):
                continue
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(page), path))
            if resolved not in uploaded:
                problems.append(f"{page} links to {target}, which is not uploaded (a 404 on the Space)")
    return problems


def _unwanted(path: str) -> str | None:
    """Why `path` must not be uploaded (a secret, a build product, a run folder), or None."""
    parts = path.split("/")
    name = parts[-1]
    if not name.endswith(".py") and any(fnmatch.fnmatchcase(name.lower(), p) for p in SECRET_PATTERNS):
        return "looks like a secret (token, key or .env file); remove it from the folder"
    if any(part in BUILD_DIRS for part in parts[:-1]):
        return "is inside a run or cache folder; move it out of the package"
    if any(fnmatch.fnmatchcase(name, p) for p in BUILD_PATTERNS):
        return "is a build product (the Space exports ONNX into its own cache); delete it or move it out"
    return None


def check_space(
    plan: SpacePlan,
    *,
    specs: Mapping[str, ModelSpec] = SPECS,
    gradio_version: str | None = None,
) -> list[str]:
    """Everything in `plan` that the Hub or a Space build would refuse, one line each (empty: ready to publish).

    Parameters:
        plan: from `plan_space`.
        specs: the models the Space offers; `models:` in the front matter must list their Hub model repos.
        gradio_version: the Gradio the app is tested with (default: the installed one).
    """
    if gradio_version is None:
        import gradio

        gradio_version = gradio.__version__
    problems: list[str] = []
    try:
        meta = read_front_matter(plan.root / "README.md")
    except GanModelsError as exc:
        problems.append(str(exc))
    else:
        problems += check_front_matter(meta, gradio_version=gradio_version, specs=specs, files=plan.paths,
                                       pinned_gradio=pinned_version(plan.root / "requirements.txt", "gradio"))
    problems += dead_links(plan)
    if "requirements.txt" not in plan.paths:
        problems.append("requirements.txt is missing: the Space would not install torch, onnxruntime, ...")
    for f in plan.files:
        if (reason := _unwanted(f.path)) is not None:
            problems.append(f"{f.path} {reason}")
        elif (f.binary or f.size > HUB_MAX_PLAIN_BYTES) and not f.lfs:
            kind = _human(f.size) if f.size > HUB_MAX_PLAIN_BYTES else "a binary file"
            suffix = Path(f.path).suffix or Path(f.path).name
            problems.append(f"{f.path} is {kind} with no LFS rule in .gitattributes: a git push to the Hub is "
                            f"refused; add `*{suffix} filter=lfs diff=lfs merge=lfs -text`")
    return problems


# --- publishing ----------------------------------------------------------------------------------------------------


def _stored_token() -> str | None:
    """HF_TOKEN, else the token `hf auth login` saved (huggingface_hub's own lookup)."""
    from huggingface_hub import get_token

    return get_token()


def _command(repo_id: str, hardware: str | None, private: bool) -> str:
    flags = (f" --hardware {hardware}" if hardware else "") + (" --private" if private else "")
    return f"python -m gan_models space {repo_id}{flags}"


def _hardware_choices() -> list[str]:
    from huggingface_hub import SpaceHardware

    return [h.value for h in SpaceHardware]


def _human(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def _format_plan(plan: SpacePlan, repo_id: str, hardware: str | None, private: bool) -> list[str]:
    width = max(len(p) for p in plan.paths)
    lines = [f"Space {repo_id} ({'private' if private else 'public'}, hardware: {hardware or 'cpu-basic (default)'})"
             f" from {plan.root}:"]
    lines += [f"  {f.path:<{width}}  {_human(f.size):>9}{'  LFS/Xet' if f.lfs else ''}" for f in plan.files]
    lfs = sum(f.lfs for f in plan.files)
    lines.append(f"{len(plan.files)} files, {_human(plan.total_bytes)} ({lfs} stored with LFS/Xet)")
    if plan.left_out:
        lines.append(f"left out {len(plan.left_out)} cache files (__pycache__, *.pyc)")
    return lines


def publish_space(
    repo_id: str,
    *,
    root: Path = REPO_ROOT,
    hardware: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    api: Any = None,
    specs: Mapping[str, ModelSpec] = SPECS,
    gradio_version: str | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Check the checkout, then create (or update) the Gradio Space `repo_id` and upload the planned files.

    Parameters:
        repo_id: "OWNER/NAME".
        root: the checkout to publish.
        hardware: a `huggingface_hub.SpaceHardware` value ("zero-a10g" is ZeroGPU); None keeps the Space's own
            (cpu-basic for a new Space).
        private: create the Space private (an existing Space keeps its visibility).
        dry_run: print the plan and the problems, upload nothing.
        api: an `huggingface_hub.HfApi` (tests pass a fake one).
        specs, gradio_version: see `check_space`.
        out: where the report lines go.

    Returns:
        0: published (or, with dry_run, nothing to fix); 1: problems found, offline or no token: nothing uploaded.

    Raises:
        GanModelsError: a malformed repo id or hardware name; the Hub refused the request (its first line).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("need OWNER/NAME")
    except HFValidationError:
        raise GanModelsError(f"{repo_id!r} is not a Space id: use OWNER/NAME, e.g. your-name/gan-studio") from None
    if hardware is not None and hardware not in (choices := _hardware_choices()):
        raise GanModelsError(f"unknown hardware {hardware!r}; choose one of {', '.join(choices)}")

    plan = plan_space(root)
    problems = check_space(plan, specs=specs, gradio_version=gradio_version)
    if dry_run:
        for line in _format_plan(plan, repo_id, hardware, private):
            out(line)
    for problem in problems:
        out(f"problem: {problem}")
    if problems:
        out(f"not published: fix the {len(problems)} problem(s) above, then run: "
            f"{_command(repo_id, hardware, private)}")
        return 1
    if dry_run:
        out("dry run: nothing uploaded")
        return 0

    later = f"then run: {_command(repo_id, hardware, private)}"
    if hub_offline():
        out(f"not published: HF_HUB_OFFLINE is set. When online, log in (`hf auth login`) and {later}")
        return 1
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    if not (getattr(api, "token", None) or _stored_token()):
        out(f"not published: no Hugging Face token. Log in with `hf auth login` (or set HF_TOKEN to a token with "
            f"write access), {later}")
        return 1
    return _upload(api, plan, repo_id, hardware=hardware, private=private, out=out)


def space_readme(text: str, repo_id: str) -> str:
    """README.md as the Space `repo_id` gets it: a front-matter `thumbnail:` that names an uploaded file becomes
    that file's URL in the Space (the Hub shows a thumbnail from a URL only)."""
    match = re.match(r"\A(---[ \t]*\r?\n.*?\r?\n)(---[ \t]*\r?\n)", text, re.S)
    if match is None:
        return text

    def url(line: re.Match[str]) -> str:
        path = line.group(2).strip().strip("\"'")
        if path.startswith("https://"):
            return line.group(0)
        return f"{line.group(1)}https://huggingface.co/spaces/{repo_id}/resolve/main/{path}"

    front = re.sub(r"(?m)^(thumbnail:[ \t]*)(.+)$", url, match.group(1))
    return front + text[match.end(1):]


@contextmanager
def staged(plan: SpacePlan, repo_id: str) -> Iterator[Path]:
    """A temporary folder holding exactly the planned files (hard links where the file system allows, else copies)
    with README.md as `space_readme` renders it for `repo_id`: what `upload_folder` sends."""
    with tempfile.TemporaryDirectory(prefix="gan-studio-space-") as tmp:
        folder = Path(tmp)
        for rel in plan.paths:
            source, target = plan.root / rel, folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel == "README.md":
                target.write_text(space_readme(source.read_text(encoding="utf-8"), repo_id), encoding="utf-8")
                continue
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        yield folder


def _upload(api: Any, plan: SpacePlan, repo_id: str, *, hardware: str | None, private: bool,
            out: Callable[[str], None]) -> int:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    folders = sorted({p.split("/")[0] for p in plan.paths if "/" in p})
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private or None, exist_ok=True,
                        space_hardware=hardware)
        with staged(plan, repo_id) as folder:
            commit = api.upload_folder(
                repo_id=repo_id, repo_type="space", folder_path=str(folder),
                allow_patterns=plan.paths,
                # files deleted or renamed here disappear from the Space too (the allow-list re-adds the current
                # ones)
                delete_patterns=[f"{d}/*" for d in folders],
                commit_message=f"Publish GAN Image Studio ({len(plan.files)} files)",
            )
        if hardware is not None:
            # create_repo sets the hardware of a new Space only; an existing one needs a request
            api.request_space_hardware(repo_id, hardware)
            if not hardware.startswith("cpu"):
                # the Upscale tab starts on RRDBNet only when the device is cuda (see app.py default_model)
                api.add_space_variable(repo_id, ENV["device"], "cuda")
    except (HfHubHTTPError, httpx.HTTPError, OSError, ValueError) as exc:
        raise GanModelsError(f"publishing to Space {repo_id} failed: {first_line(exc)}") from exc
    out(f"published {len(plan.files)} files ({_human(plan.total_bytes)}) to "
        f"https://huggingface.co/spaces/{repo_id} ({getattr(commit, 'commit_url', commit)}); the Space now builds")
    return 0


def add_space_arguments(parser: argparse.ArgumentParser) -> None:
    """The `python -m gan_models space` options."""
    parser.add_argument("repo_id", metavar="OWNER/NAME", help="the Space to create or update")
    parser.add_argument("--hardware", default=None,
                        help="Space hardware, e.g. cpu-basic, t4-small, zero-a10g (ZeroGPU); default: keep")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--dry-run", action="store_true", help="print the files, sizes and problems; upload nothing")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the checkout to publish (default: this one)")


def cmd_space(args: argparse.Namespace) -> int:
    return publish_space(args.repo_id, root=args.root, hardware=args.hardware, private=args.private,
                         dry_run=args.dry_run)


# --- running on a Space: persistent storage -------------------------------------------------------------------------


def use_persistent_storage(
    root: str | Path = "/data", environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Keep the ONNX cache, and Hub files downloaded at run time, on the Space's persistent storage, if it has any,
    without losing the files `preload_from_hub` put in the default Hub cache at build time.

    When `root` exists and is writable: GAN_STUDIO_ONNX_CACHE becomes ROOT/gan-studio/onnx and HF_HOME
    ROOT/.huggingface, each unless already set (HF_HUB_CACHE set also keeps HF_HOME as it is). Every repository
    folder of the Hub cache in use before the move (where the build preloaded its files) is then linked into the
    new cache, so the preloaded files are read where they are, not downloaded again; later downloads land on the
    storage and survive a restart. Call it before any Hub access: the library reads these variables at call time.

    Returns:
        {variable: folder} for what it set (empty when there is no writable `root`), for the settings panel.
    """
    environ = process_environ() if environ is None else environ
    base = Path(root)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        return {}
    preloaded = hub_cache_dir(environ)
    wanted = {ENV["hf_home"]: base / ".huggingface", ENV["onnx_cache"]: base / "gan-studio" / "onnx"}
    changed: dict[str, str] = {}
    for name, folder in wanted.items():
        if environ.get(name) or (name == ENV["hf_home"] and environ.get(ENV["hub_cache"])):
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue  # a read-only mount behind a writable-looking folder: keep the default cache
        environ[name] = str(folder)
        changed[name] = str(folder)
    if ENV["hf_home"] in changed:
        link_preloaded(preloaded, hub_cache_dir(environ))
    return changed


def link_preloaded(preloaded: Path, cache: Path) -> list[str]:
    """Link each repository folder of the Hub cache `preloaded` (models--owner--name, ...) into the Hub cache
    `cache`, unless `cache` already has one of that name. Returns the names linked."""
    if not preloaded.is_dir() or preloaded.resolve() == cache.resolve():
        return []
    cache.mkdir(parents=True, exist_ok=True)
    linked = []
    for repo in sorted(preloaded.iterdir()):
        target = cache / repo.name
        if repo.is_dir() and repo.name.startswith(HUB_REPO_PREFIXES) and not target.exists() \
                and not target.is_symlink():
            target.symlink_to(repo.resolve(), target_is_directory=True)
            linked.append(repo.name)
    return linked
