"""README.md: its front matter is a valid Space configuration for the installed Gradio and the specs, it stays short,
its test commands are the ones CI runs, its model table matches SPECS, and every page it (or docs/) links exists."""

from __future__ import annotations

import re

import gradio
import pytest

from gan_models import SPECS, deploy

from .conftest import REPO

README = REPO / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_front_matter_is_a_valid_space_configuration():
    meta = deploy.read_front_matter(README)
    pinned = deploy.pinned_version(REPO / "requirements.txt", "gradio")
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gradio.__version__ == pinned
    assert meta["app_file"] == "app.py" and (REPO / "app.py").is_file()
    assert meta["python_version"] == "3.11"
    assert len(meta["short_description"]) <= deploy.SHORT_DESCRIPTION_MAX
    assert sorted(meta["models"]) == sorted(deploy.hub_model_repos(SPECS))
    plan = deploy.plan_space(REPO)
    assert deploy.check_front_matter(meta, gradio_version=gradio.__version__, pinned_gradio=pinned, specs=SPECS,
                                     files=plan.paths) == []


def test_readme_is_short():
    text = README.read_text(encoding="utf-8")
    body = text.split("\n---\n", 1)[1]  # after the front matter (the Space's configuration, not for readers)
    assert len(body.encode()) < 15_000, "keep the README to what a newcomer needs; move details into docs/"


def test_test_commands_are_the_ones_ci_runs():
    commands = ["python3 -m pytest -q", "python3 -m pytest -q -m slow"]  # the default run, then what it leaves out
    text = README.read_text(encoding="utf-8")
    assert "## Tests\n\n```bash\n" + "\n".join(commands) + "\n```\n" in text
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-2:] == commands


def test_model_table_matches_the_specs():
    """The README's table is what docs/models.md's command prints from SPECS."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if re.match(r"\| `[^`]+` \|", line)]
    expected = []
    for s in SPECS.values():
        src = (f"bundled `weights/{s.bundled.name}`" if s.is_bundled else
               f"{'Space' if s.repo_type == 'space' else 'model'} `{s.repo_id}` / `{s.filename}`"
               + (f", key prefix `{s.key_prefix}`" if s.key_prefix else "") + f" ({s.revision})")
        expected.append(f"| `{s.id}` | {s.task} | {s.arch} | {src} | {s.licence} |")
    model_rows = [r for r in rows if r.split("`")[1] in SPECS]
    assert model_rows == expected


@pytest.mark.parametrize("page", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    missing = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert missing == [], f"{page.relative_to(REPO)} links to missing files"


def test_the_uploaded_readme_has_no_dead_link_and_preloads_the_curated_files():
    """On the Space a relative link opens a file of the Space: every one must be uploaded (docs/ is)."""
    plan = deploy.plan_space(REPO)
    uploaded = set(plan.paths)
    readme = deploy.space_readme(README.read_text(encoding="utf-8"), "me/gan-studio")
    targets = deploy.markdown_links(readme)
    assert "docs/deployment.md" in targets and len(targets) >= 10
    for target in targets:
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            assert target.split("#")[0] in uploaded, target
    assert deploy.dead_links(plan) == []  # the docs pages uploaded with it, too
    meta = deploy.read_front_matter(README)
    thumbnail = re.search(r"(?m)^thumbnail: (\S+)$", readme).group(1)
    assert thumbnail == f"https://huggingface.co/spaces/me/gan-studio/resolve/main/{meta['thumbnail']}"
    assert meta["thumbnail"] in uploaded
    assert meta["preload_from_hub"] == deploy.preload_entries(SPECS)
    assert meta["suggested_hardware"] == "t4-small" and "super-resolution" in meta["tags"]
