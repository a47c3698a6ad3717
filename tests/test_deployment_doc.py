"""docs/deployment.md walked through as a newcomer would: each command it shows exists as written.

Offline checks only: the `hf` commands and options against the installed huggingface_hub's own `--help` (its `hf`
command group, run in this process), the publish command lines against its argument parser, hardware names against
the Hub's flavours, GAN_STUDIO_DEVICE against Settings; and no page, card or message tells anyone to run
`huggingface-cli`, which the pinned huggingface_hub no longer ships.
"""

from __future__ import annotations

import argparse
import re
import shlex

from huggingface_hub import SpaceHardware

from gan_models import Settings
from gan_models.deploy import add_space_arguments

from .conftest import REPO

DOC = REPO / "docs" / "deployment.md"
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def commands(prefix: str) -> list[list[str]]:
    """The command lines of the page's bash blocks that start with `prefix` (comments dropped)."""
    lines = []
    for block in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(prefix):
                lines.append(shlex.split(line))
    return lines


def test_the_walkthrough_covers_every_step():
    text = DOC.read_text(encoding="utf-8")
    steps = text.split("## Step by step (first time)", 1)[1].split("\n## ", 1)[0]
    for step in ("**Install and log in.**", "**Create the Space and upload.**", "**Choose the hardware.**",
                 "**Set `GAN_STUDIO_DEVICE`.**"):
        assert step in steps
    assert {tuple(c[:3]) for c in commands("hf ")} >= {("hf", "auth", "login"), ("hf", "spaces", "settings"),
                                                        ("hf", "spaces", "variables")}


def test_every_hf_command_and_option_exists(monkeypatch):
    """Each command's `--help`, from the `hf` entry point's own command group, in this process (fast)."""
    from click.testing import CliRunner
    from huggingface_hub.cli.hf import app as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_command: dict[tuple[str, ...], set[str]] = {}
    for words in commands("hf "):
        path = tuple(w for w in words[1:4] if re.fullmatch(r"[a-z][a-z-]*", w) and "/" not in w)
        path = path[:next((i for i, w in enumerate(words[1:]) if not re.fullmatch(r"[a-z][a-z-]*", w)),
                          len(path))]
        by_command.setdefault(path, set()).update(w.split("=")[0] for w in words if w.startswith("-"))
    assert by_command
    for path, options in by_command.items():
        result = CliRunner().invoke(hf, [*path, "--help"], prog_name="hf")
        assert result.exit_code == 0, (path, result.output[-500:])
        assert f"Usage: hf {' '.join(path)} " in result.output, path
        for option in options:
            assert option in result.output, (path, option)


def test_every_publish_command_parses_with_a_real_hardware_name():
    parser = argparse.ArgumentParser(prog="python -m gan_models space")
    add_space_arguments(parser)
    lines = commands("python -m gan_models space")
    assert len(lines) >= 4
    flavours = {h.value for h in SpaceHardware}
    for words in lines:
        args = parser.parse_args(words[4:])
        assert args.repo_id == "OWNER/NAME"
        assert args.hardware is None or args.hardware in flavours
    for words in commands("hf spaces settings"):
        assert words[words.index("--hardware") + 1] in flavours


def test_the_device_variable_is_a_setting():
    (line,) = [w for words in commands("hf spaces variables add") for w in words if w.startswith("GAN_STUDIO_")]
    name, value = line.split("=")
    assert Settings.from_env({name: value}).device == "cuda"


def test_no_page_card_or_message_names_huggingface_cli():
    sources = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "gan_models").rglob("*.py"),
               *(REPO / "training").rglob("*.py"), REPO / "app.py", REPO / "train.py"]
    assert [p.relative_to(REPO).as_posix() for p in sources if "huggingface-cli" in p.read_text()] == []
