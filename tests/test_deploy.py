"""Publishing to Hugging Face Spaces and running on one (gan_models.deploy), offline: a fake checkout, a fake HfApi
that records its calls, a stub `spaces` package in sys.modules."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest
from huggingface_hub import SpaceHardware
from huggingface_hub.utils import filter_repo_objects
from PIL import Image

from gan_models import deploy
from gan_models.cli import main as cli_main
from gan_models.errors import GanModelsError
from gan_models.settings import Settings, hub_cache_dir
from gan_models.specs import HubFile, ModelSpec

from .conftest import REPO, hub_cache_path

GRADIO = "6.31.0"
SPECS_FOR_CHECKOUT = {
    "hub-model": ModelSpec(id="hub-model", title="Hub", task="upscale", arch="srvgg_compact",
                           sources=(HubFile(repo_id="owner/model", filename="m.pth"),), scale=4),
    # a checkpoint hosted in a Space cannot be listed under models:
    "space-model": ModelSpec(id="space-model", title="Space", task="style", arch="resnet_generator",
                             sources=(HubFile(repo_id="owner/a-space", filename="g.pth", repo_type="space"),)),
}
FRONT_MATTER = {
    "title": "GAN Image Studio", "emoji": "🎨", "colorFrom": "indigo", "colorTo": "pink", "sdk": "gradio",
    "sdk_version": f'"{GRADIO}"', "python_version": '"3.11"', "app_file": "app.py", "license": "mit",
    "short_description": "Style transfer, sketch to photo and 4x upscaling with GANs",
    "suggested_hardware": "t4-small", "thumbnail": "docs/pic.png",
}
# What a Space gets from the fake checkout below: app.py, the packages reached through its imports (export only
# through a lazy import inside a function), the weights and manifest, example images, and the four root files.
EXPECTED = [
    ".gitattributes",
    "README.md",
    "app.py",
    "docs/guide.md",
    "docs/pic.png",
    "examples/a.png",
    "examples/b.jpg",
    "export/__init__.py",
    "export/onnx_export.py",
    "gan_models/__init__.py",
    "gan_models/archs/__init__.py",
    "gan_models/archs/net.py",
    "gan_models/archs/tokenizer.py",
    "gan_models/specs_table.json",
    "requirements.txt",
    "weights/MANIFEST.json",
    "weights/default.safetensors",
]


def write_readme(root: Path, *, models: tuple[str, ...] = ("owner/model",),
                 preload: tuple[str, ...] = ("owner/model m.pth",), body: str = "See [the guide](docs/guide.md).\n",
                 **changes: object) -> None:
    lines = [f"{k}: {v}" for k, v in {**FRONT_MATTER, **changes}.items()]
    lines += ["models:", *(f"  - {m}" for m in models), "tags:", "  - gan", "preload_from_hub:",
              *(f"  - {p}" for p in preload)]
    (root / "README.md").write_text("---\n" + "\n".join(lines) + "\n---\n\n# GAN Image Studio\n\n" + body,
                                    encoding="utf-8")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with everything a Space needs and everything it must not get."""
    root = tmp_path / "studio"
    files = {
        "app.py": "import argparse\nimport gradio as gr\n\nfrom gan_models import f\n",
        "gan_models/__init__.py": ("from .archs import net\n\n\n"
                                   "def f():\n    from export.onnx_export import g\n    return g\n"),
        "gan_models/archs/__init__.py": "",
        "gan_models/archs/net.py": "import torch\n",
        "gan_models/archs/tokenizer.py": "",  # code, not a token
        "gan_models/specs_table.json": "{}\n",
        "export/__init__.py": "",
        "export/onnx_export.py": "def g():\n    return 1\n",
        "train.py": "import gan_models\n",  # not imported by the app: a Space does not train
        "training/__init__.py": "",
        "bench/run.py": "import gan_models\n",
        "tests/test_x.py": "def test():\n    pass\n",
        "weights/MANIFEST.json": "{}\n",
        "docs/guide.md": "Back to the [README](../README.md#top); ![a picture](pic.png \"title\")\n",
        "weights/make_manifest.py": "print()\n",
        "examples/make_examples.py": "print()\n",
        "requirements.txt": f"torch==2.14.1\ngradio=={GRADIO}\n",
        ".env": "HF_TOKEN=hf_secret\n",
        "runs/x4/log.csv": "step\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    # 12 MB of binary: over the Hub's 10 MB limit for files outside LFS/Xet
    (root / "weights/default.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}      " + bytes(12_000_000))
    (root / "runs/x4/checkpoint.pt").write_bytes(bytes(100))
    (root / "gan_models/__pycache__").mkdir()
    (root / "gan_models/__pycache__/specs.cpython-311.pyc").write_bytes(b"\x00\x01")
    (root / "gan_models/archs/__pycache__").mkdir()
    (root / "gan_models/archs/__pycache__/net.cpython-311.pyc").write_bytes(b"\x00\x01")
    Image.new("RGB", (8, 8), "red").save(root / "examples/a.png")
    Image.new("RGB", (8, 8), "blue").save(root / "examples/b.jpg")
    Image.new("RGB", (8, 8), "green").save(root / "docs/pic.png")
    shutil.copy(REPO / ".gitattributes", root / ".gitattributes")  # the repository's real LFS rules
    write_readme(root)
    return root


class FakeHfApi:
    """Records the calls publish_space makes; `fail` makes create_repo raise it."""

    def __init__(self, *, token: str | None = "hf_test", fail: Exception | None = None) -> None:
        self.token = token
        self.fail = fail
        self.calls: list[tuple[str, tuple, dict]] = []

    def create_repo(self, *args: object, **kwargs: object) -> str:
        self.calls.append(("create_repo", args, kwargs))
        if self.fail is not None:
            raise self.fail
        return f"https://huggingface.co/spaces/{args[0]}"

    def upload_folder(self, **kwargs: object) -> types.SimpleNamespace:
        self.calls.append(("upload_folder", (), kwargs))
        folder = Path(str(kwargs["folder_path"]))  # a temporary folder: what it held when the upload ran
        self.uploaded = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        return types.SimpleNamespace(commit_url="https://huggingface.co/spaces/me/studio/commit/abc")

    def request_space_hardware(self, *args: object, **kwargs: object) -> None:
        self.calls.append(("request_space_hardware", args, kwargs))

    def add_space_variable(self, *args: object, **kwargs: object) -> None:
        self.calls.append(("add_space_variable", args, kwargs))


def publish(root: Path, api: FakeHfApi, lines: list[str], **kwargs: object) -> int:
    return deploy.publish_space("me/studio", root=root, api=api, specs=SPECS_FOR_CHECKOUT, gradio_version=GRADIO,
                                out=lines.append, **kwargs)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# --- the plan and the checks ---------------------------------------------------------------------------------------


def test_plan_is_exactly_the_space_files(checkout):
    plan = deploy.plan_space(checkout)
    assert plan.paths == EXPECTED
    assert sorted(plan.left_out) == ["gan_models/__pycache__/specs.cpython-311.pyc",
                                     "gan_models/archs/__pycache__/net.cpython-311.pyc"]
    by_path = {f.path: f for f in plan.files}
    assert by_path["weights/default.safetensors"].lfs and by_path["weights/default.safetensors"].binary
    assert by_path["examples/a.png"].lfs and by_path["examples/b.jpg"].lfs
    assert not by_path["app.py"].lfs and not by_path["app.py"].binary
    assert plan.total_bytes == sum((checkout / p).stat().st_size for p in EXPECTED)
    assert deploy.check_space(plan, specs=SPECS_FOR_CHECKOUT, gradio_version=GRADIO) == []


def test_dry_run_prints_the_plan_and_uploads_nothing(checkout, online):
    api, lines = FakeHfApi(), []
    assert publish(checkout, api, lines, dry_run=True, hardware="zero-a10g") == 0
    assert api.calls == []
    text = "\n".join(lines)
    for path in EXPECTED:
        assert f"  {path} " in text
    assert "weights/default.safetensors" in text and "12.0 MB  LFS/Xet" in text
    assert f"{len(EXPECTED)} files, 12.0 MB (4 stored with LFS/Xet)" in text
    assert "left out 2 cache files" in text
    assert "hardware: zero-a10g" in text
    assert lines[-1] == "dry run: nothing uploaded"
    for absent in ("tests/", "runs/", "bench/", "train.py", "training/", ".env", "__pycache__/", ".pyc"):
        assert f"  {absent}" not in text


def test_publish_uploads_exactly_the_plan(checkout, online):
    api, lines = FakeHfApi(), []
    assert publish(checkout, api, lines, hardware="zero-a10g", private=True) == 0
    names = [name for name, _, _ in api.calls]
    assert names == ["create_repo", "upload_folder", "request_space_hardware", "add_space_variable"]
    _, args, kwargs = api.calls[0]
    assert args == ("me/studio",)
    assert kwargs == {"repo_type": "space", "space_sdk": "gradio", "private": True, "exist_ok": True,
                      "space_hardware": "zero-a10g"}
    upload = api.calls[1][2]
    assert upload["repo_id"] == "me/studio" and upload["repo_type"] == "space"
    assert upload["allow_patterns"] == EXPECTED
    # the folder sent holds exactly the plan, byte for byte, but for the README's thumbnail: a URL in the Space
    assert sorted(api.uploaded) == EXPECTED
    assert all(api.uploaded[p] == (checkout / p).read_bytes() for p in EXPECTED if p != "README.md")
    readme = api.uploaded["README.md"].decode()
    assert readme == (checkout / "README.md").read_text().replace(
        "thumbnail: docs/pic.png", "thumbnail: https://huggingface.co/spaces/me/studio/resolve/main/docs/pic.png")
    # the real client's own filter selects exactly the plan from everything in the folder
    on_disk = sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*") if p.is_file())
    assert list(filter_repo_objects(on_disk, allow_patterns=upload["allow_patterns"])) == EXPECTED
    # stale code in the Space is deleted; nothing outside the uploaded folders is touched
    assert sorted(filter_repo_objects(["gan_models/old.py", "export/gone.py", "notes.txt", "weights/x.safetensors"],
                                      allow_patterns=upload["delete_patterns"])) == \
        ["export/gone.py", "gan_models/old.py", "weights/x.safetensors"]
    assert api.calls[2][1] == ("me/studio", "zero-a10g")
    assert api.calls[3][1] == ("me/studio", "GAN_STUDIO_DEVICE", "cuda")
    assert lines[-1].startswith(f"published {len(EXPECTED)} files (12.0 MB) to https://huggingface.co/spaces/me/studio")


def test_cpu_publish_keeps_hardware_and_device(checkout, online):
    api, lines = FakeHfApi(), []
    assert publish(checkout, api, lines) == 0
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][2]["private"] is None and api.calls[0][2]["space_hardware"] is None


def _bad_sdk_version(root: Path) -> None:
    write_readme(root, sdk_version='"6.30.0"')


def _missing_app_file(root: Path) -> None:
    write_readme(root, app_file="main.py")


def _unquoted_python(root: Path) -> None:
    write_readme(root, python_version="3.10")


def _no_lfs_rule(root: Path) -> None:
    (root / ".gitattributes").write_text("*.png filter=lfs diff=lfs merge=lfs -text\n"
                                         "*.jpg filter=lfs diff=lfs merge=lfs -text\n")


def _secret_in_package(root: Path) -> None:
    (root / "gan_models/hf_token.txt").write_text("hf_abc\n")


def _env_in_package(root: Path) -> None:
    (root / "export/.env").write_text("HF_TOKEN=x\n")


def _onnx_in_package(root: Path) -> None:
    (root / "export/model.onnx").write_bytes(b"\x08\x07onnx")


def _run_folder_in_package(root: Path) -> None:
    (root / "gan_models/runs").mkdir()
    (root / "gan_models/runs/log.csv").write_text("step\n")


def _models_wrong(root: Path) -> None:
    write_readme(root, models=("owner/a-space", "not a repo id"))


def _long_description(root: Path) -> None:
    write_readme(root, short_description="x" * 61)


def _no_front_matter(root: Path) -> None:
    (root / "README.md").write_text("# GAN Image Studio\n")


def _preload_wrong(root: Path) -> None:
    write_readme(root, preload=("owner/model other.pth",))


def _dead_links(root: Path) -> None:
    write_readme(root, body="[training](docs/training.md), [ok](docs/guide.md#usage), [web](https://x.org/a.md), "
                            "[top](#top), ![grid](docs/missing.png)\n")
    (root / "docs/guide.md").write_text("[code](../train.py)\n")


def _card_fields_wrong(root: Path) -> None:
    write_readme(root, suggested_hardware="h100-huge", thumbnail="docs/nope.png")


@pytest.mark.parametrize(("breakage", "expected"), [
    (_bad_sdk_version, ["README.md: sdk_version 6.30.0 is not the installed Gradio 6.31.0 (the version the app and "
                        "its tests run on here)",
                        "README.md: sdk_version 6.30.0 differs from requirements.txt's gradio==6.31.0; the Space "
                        "would install one over the other"]),
    (_missing_app_file, ["README.md: app_file 'main.py' is not among the uploaded files; use app_file: app.py"]),
    (_unquoted_python, ["README.md: python_version must be a quoted string such as \"3.11\", not 3.1 (unquoted 3.10 "
                        "reads as the number 3.1)"]),
    (_no_lfs_rule, ["weights/default.safetensors is 12.0 MB with no LFS rule in .gitattributes: a git push to the "
                    "Hub is refused; add `*.safetensors filter=lfs diff=lfs merge=lfs -text`"]),
    (_secret_in_package, ["gan_models/hf_token.txt looks like a secret (token, key or .env file); remove it from the "
                          "folder"]),
    (_env_in_package, ["export/.env looks like a secret (token, key or .env file); remove it from the folder"]),
    (_onnx_in_package, ["export/model.onnx is a build product (the Space exports ONNX into its own cache); delete it "
                        "or move it out"]),
    (_run_folder_in_package, ["gan_models/runs/log.csv is inside a run or cache folder; move it out of the package"]),
    (_models_wrong, ["README.md: models entry 'not a repo id' is not a Hub model id (owner/name)",
                     "README.md: models lacks owner/model (downloaded by hub-model)",
                     "README.md: models lists not a repo id, which no model spec downloads",
                     "README.md: models lists owner/a-space, which no model spec downloads"]),
    (_long_description, ["README.md: short_description must be at most 60 characters (has 61)"]),
    (_no_front_matter, ["README.md has no YAML front matter (a block between two '---' lines at the top)"]),
    (_preload_wrong, ["README.md: preload_from_hub lacks 'owner/model m.pth' (otherwise the first visitor waits "
                      "for it)",
                      "README.md: preload_from_hub has 'owner/model other.pth', which no model spec reads as "
                      "written"]),
    (_dead_links, ["README.md links to docs/training.md, which is not uploaded (a 404 on the Space)",
                   "README.md links to docs/missing.png, which is not uploaded (a 404 on the Space)",
                   "docs/guide.md links to ../train.py, which is not uploaded (a 404 on the Space)"]),
    (_card_fields_wrong, [f"README.md: suggested_hardware 'h100-huge' is not a Space hardware flavour "
                          f"({', '.join(h.value for h in SpaceHardware)})",
                          "README.md: thumbnail 'docs/nope.png' is neither an https URL nor an uploaded image"]),
])
def test_each_problem_is_one_line_and_nothing_is_uploaded(checkout, online, breakage, expected):
    breakage(checkout)
    api, lines = FakeHfApi(), []
    assert publish(checkout, api, lines, hardware="t4-small") == 1
    assert api.calls == []
    assert lines == [f"problem: {p}" for p in expected] + [
        f"not published: fix the {len(expected)} problem(s) above, then run: "
        "python -m gan_models space me/studio --hardware t4-small"]


def test_offline_says_what_to_run_later(checkout, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api, lines = FakeHfApi(), []
    assert publish(checkout, api, lines, private=True) == 1
    assert api.calls == []
    assert lines == ["not published: HF_HUB_OFFLINE is set. When online, log in (`hf auth login`) and then run: "
                     "python -m gan_models space me/studio --private"]


def test_no_token_says_how_to_log_in(checkout, online, monkeypatch):
    monkeypatch.setattr(deploy, "_stored_token", lambda: None)
    api, lines = FakeHfApi(token=None), []
    assert publish(checkout, api, lines, hardware="zero-a10g") == 1
    assert api.calls == []
    assert lines == ["not published: no Hugging Face token. Log in with `hf auth login` (or set HF_TOKEN to a token "
                     "with write access), then run: python -m gan_models space me/studio --hardware zero-a10g"]


def test_hub_refusal_is_one_typed_error(checkout, online):
    api = FakeHfApi(fail=OSError("403 Forbidden: ZeroGPU hardware needs a PRO subscription\nrequest id: 42"))
    with pytest.raises(GanModelsError, match=r"^publishing to Space me/studio failed: 403 Forbidden: ZeroGPU "
                                             r"hardware needs a PRO subscription$"):
        publish(checkout, api, [], hardware="zero-a10g")


@pytest.mark.parametrize(("repo_id", "hardware", "message"), [
    ("studio", None, "'studio' is not a Space id: use OWNER/NAME, e.g. your-name/gan-studio"),
    ("me/bad name", None, "'me/bad name' is not a Space id"),
    ("me/studio", "h100-huge", "unknown hardware 'h100-huge'; choose one of cpu-basic, cpu-upgrade, zero-a10g"),
])
def test_bad_arguments_name_the_valid_choices(checkout, repo_id, hardware, message):
    with pytest.raises(GanModelsError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        deploy.publish_space(repo_id, root=checkout, hardware=hardware, api=FakeHfApi(), out=print)


def test_cli_dry_run_on_this_repository_is_clean(capsys):
    """The repository as committed is publishable: front matter, LFS rules, no secrets, exact file list."""
    assert cli_main(["space", "me/gan-studio", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "problem:" not in out
    assert out.rstrip().endswith("dry run: nothing uploaded")
    assert "weights/default-sketch.safetensors" in out and "app.py" in out and "gan_models/deploy.py" in out
    assert "docs/deployment.md" in out and "docs/default-style_grid.jpg" in out  # the README's links and thumbnail
    for line in out.splitlines():
        if line.startswith("  "):
            path = line.split()[0]
            assert not path.startswith(("tests/", "bench/", "runs/", "training/")) and path != "train.py", path
            if path.endswith((".safetensors", ".png", ".jpg")):
                assert line.endswith("LFS/Xet"), line


def test_cli_usage_error_is_one_line(capsys):
    assert cli_main(["space", "nobody", "--dry-run"]) == 2
    assert capsys.readouterr().err == "error: 'nobody' is not a Space id: use OWNER/NAME, e.g. your-name/gan-studio\n"


def test_gitattributes_rules_follow_git_matching():
    rules = deploy.lfs_patterns(REPO / ".gitattributes")
    assert deploy.is_lfs("weights/default-sketch.safetensors", rules)
    assert deploy.is_lfs("saved_model/variables/data-00000", rules)
    assert not deploy.is_lfs("app.py", rules) and not deploy.is_lfs("weights/MANIFEST.json", rules)
    later = [*rules, ("weights/*.safetensors", False)]  # the last matching line wins
    assert not deploy.is_lfs("weights/a.safetensors", later) and deploy.is_lfs("other/a.safetensors", later)
    assert deploy.is_lfs("deep/dir/x.bin", [("deep/**/*.bin", True)])
    assert not deploy.is_lfs("deep/dir/x.bin", [("deep/*.bin", True)])


# --- persistent storage --------------------------------------------------------------------------------------------


def test_caches_move_to_persistent_storage(tmp_path, monkeypatch):
    environ: dict[str, str] = {}
    placed = deploy.use_persistent_storage(tmp_path, environ)
    assert placed == environ == {"HF_HOME": str(tmp_path / ".huggingface"),
                                 "GAN_STUDIO_ONNX_CACHE": str(tmp_path / "gan-studio" / "onnx")}
    assert (tmp_path / ".huggingface").is_dir() and (tmp_path / "gan-studio" / "onnx").is_dir()
    # what the library then uses: Hub downloads and ONNX exports land on the persistent storage
    assert Settings.from_env(environ).onnx_cache == tmp_path / "gan-studio" / "onnx"
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", environ["HF_HOME"])
    assert hub_cache_dir() == tmp_path / ".huggingface" / "hub"


def test_caches_the_user_placed_stay_put(tmp_path):
    environ = {"HF_HOME": "/elsewhere/hf", "GAN_STUDIO_ONNX_CACHE": "/elsewhere/onnx"}
    assert deploy.use_persistent_storage(tmp_path, environ) == {}
    assert environ == {"HF_HOME": "/elsewhere/hf", "GAN_STUDIO_ONNX_CACHE": "/elsewhere/onnx"}
    environ = {"HF_HUB_CACHE": "/elsewhere/hub"}  # HF_HOME would not move a cache set this way
    assert deploy.use_persistent_storage(tmp_path, environ) == {
        "GAN_STUDIO_ONNX_CACHE": str(tmp_path / "gan-studio" / "onnx")}
    assert "HF_HOME" not in environ


def test_no_persistent_storage_changes_nothing(tmp_path):
    environ: dict[str, str] = {}
    assert deploy.use_persistent_storage(tmp_path / "data", environ) == {}
    (tmp_path / "file").write_text("")
    assert deploy.use_persistent_storage(tmp_path / "file", environ) == {}
    assert environ == {} and not (tmp_path / "data").exists()


def test_persistent_storage_reuses_the_preloaded_cache(tmp_path, monkeypatch):
    """preload_from_hub fills the default Hub cache at build time; moving HF_HOME to /data must not lose it."""
    from huggingface_hub import hf_hub_download

    home, data = tmp_path / "home", tmp_path / "data"
    data.mkdir()
    preloaded = home / ".cache" / "huggingface" / "hub"
    spec = HubFile(repo_id="owner/model", filename="m.pth", revision="main")
    hub_cache_path(preloaded, spec).write_bytes(b"preloaded weights")
    monkeypatch.setenv("HOME", str(home))
    environ: dict[str, str] = {}
    assert deploy.use_persistent_storage(data, environ)["HF_HOME"] == str(data / ".huggingface")
    linked = data / ".huggingface" / "hub" / "models--owner--model"
    assert linked.is_symlink() and linked.resolve() == (preloaded / "models--owner--model").resolve()
    # the library and huggingface_hub, offline, read the preloaded file through the new cache
    for name in ("HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", environ["HF_HOME"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = hf_hub_download("owner/model", "m.pth", cache_dir=hub_cache_dir())
    assert Path(path).read_bytes() == b"preloaded weights"
    # a second start finds the link in place and changes nothing
    assert deploy.link_preloaded(preloaded, data / ".huggingface" / "hub") == []
