"""The documents generated from one source: docs/claims.md and the README's verdict table match the
experiment modules and the full edition in docs/report/; the README's first code runs as pasted;
nothing cites a file the repository does not have."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bnlab.report import readme
from bnlab.report.catalogue import claims

ROOT = Path(__file__).resolve().parents[1]
EDITION = ROOT / "docs" / "report"


def test_docs_claims_md_is_generated_from_the_experiment_modules():
    assert (ROOT / "docs" / "claims.md").read_text(encoding="utf-8") == readme.claims_markdown()
    for c in claims().values():
        assert (ROOT / readme.module_path(c.id)).exists()


def test_readme_verdict_table_matches_the_full_edition():
    doc = json.loads((EDITION / "results.json").read_text(encoding="utf-8"))
    assert doc["environment"]["quick"] is False  # the edition is a full run
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.update_readme(text, readme.verdict_table(doc)) == text, (
        "README's verdict table is out of date: run python -m bnlab.report.readme"
    )
    assert (EDITION / "index.html").exists()


def test_the_readme_links_the_full_edition_near_its_top():
    top = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:15]
    assert any("(docs/report/index.html)" in line for line in top)


def test_the_table_names_every_claim_with_its_finding_verdict_and_stability():
    from bnlab.experiments.stability import Stability

    stable = Stability("not reproduced", 0.97, 10, 500, {"not reproduced": 485, "inconclusive": 15}, "bootstrap")
    shaky = Stability(
        "reproduced", 0.62, 6, 500, {"reproduced": 310, "inconclusive": 190}, "bootstrap", 24, "reproduced"
    )
    doc = {
        "environment": {"quick": False, "wall_time_s": 600, "cpu": "a CPU", "cpu_count": 2},
        "claims": [
            {
                "id": "C4",
                "finding": "Before was better | here.",
                "verdict": "not reproduced",
                "stability": stable.to_json(),
            },
            {"id": "C9", "finding": "BRN won.", "verdict": "underpowered", "stability": shaky.to_json()},
        ],
    }
    table = readme.verdict_table(doc)
    rows = [line for line in table.splitlines() if line.startswith("| C")]
    assert [r.split(" | ")[0] for r in rows] == [f"| {cid}" for cid in claims()]
    c4 = next(r for r in rows if r.startswith("| C4 |"))
    assert "Before was better \\| here." in c4 and c4.endswith("| **not reproduced** (stable in 97% of resamples) |")
    c9 = next(r for r in rows if r.startswith("| C9 |"))
    assert "not a finding" in c9 and "**underpowered**" in c9 and "only 62% of resamples" in c9
    assert "about 24 seeds per setting" in c9 and "**reproduced**" not in c9
    assert next(r for r in rows if r.startswith("| C1 |")).endswith("| did not run | not run |")
    assert "10.0 min on 2 cores" in table


def test_a_quick_run_cannot_make_the_readme_table():
    with pytest.raises(ValueError, match="full run"):
        readme.verdict_table({"environment": {"quick": True}, "claims": []})


def test_update_replaces_only_the_text_between_the_markers():
    text = f"intro\n{readme.START}\nold\n{readme.END}\noutro\n"
    assert readme.update_readme(text, "new") == f"intro\n{readme.START}\nnew\n{readme.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        readme.update_readme("no markers", "new")


def test_check_mode_reports_stale_files(tmp_path):
    (tmp_path / "docs" / "report").mkdir(parents=True)
    doc = {"environment": {"quick": False, "wall_time_s": 60}, "claims": []}
    (tmp_path / "docs" / "report" / "results.json").write_text(json.dumps(doc))
    (tmp_path / "README.md").write_text(f"{readme.START}\n{readme.END}\n")
    assert readme.main(["--root", str(tmp_path), "--check"]) == 1
    assert readme.main(["--root", str(tmp_path)]) == 0
    assert readme.main(["--root", str(tmp_path), "--check"]) == 0
    assert (tmp_path / "docs" / "claims.md").read_text() == readme.claims_markdown()


def test_the_readmes_first_layers_snippet_runs_as_pasted():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Using the layers") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README: Using the layers", "exec"), {"__name__": "readme_snippet"})


def test_nothing_cites_a_claims_file_the_repository_does_not_have():
    missing = "CLAIMS" + ".md"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    citing = [f for f in files if (ROOT / f).is_file() and missing in (ROOT / f).read_text(errors="ignore")]
    assert citing == []


def test_the_readme_verdict_says_each_part_and_the_rounds_when_an_edition_has_them():
    stab = {"verdict": "reproduced", "share": 1.0, "seeds": 9, "resamples": 500, "outcomes": {}, "method": "m"}
    result = {
        "verdict": "inconclusive",
        "stability": {**stab, "verdict": "inconclusive", "share": 0.95},
        "parts": [
            {"title": "BN is faster", "verdict": "reproduced", "stability": stab},
            {"title": "BN is steadier", "verdict": "underpowered", "stability": {**stab, "share": 0.5}},
        ],
        "rounds": {"rounds": 2, "seeds": 9, "stopped": "cap"},
    }
    words = readme._verdict(result)
    assert "BN is faster: **reproduced** (100% of resamples)" in words
    assert "BN is steadier: **underpowered** (50% of resamples)" in words
    assert "9 seeds in 2 round(s), cap" in words
