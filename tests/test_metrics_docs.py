"""docs/metrics.md is generated from the metric catalog and must be current."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tmcd.cli.main import cli
from tmcd.metrics import docs
from tmcd.metrics.catalog import SPECS

ROOT = Path(__file__).resolve().parent.parent


def test_metrics_doc_is_up_to_date() -> None:
    assert (ROOT / "docs" / "metrics.md").read_text() == docs.render(), (
        "docs/metrics.md is out of date: run `tmcd docs generate`"
    )


def test_every_metric_is_documented_with_labels_and_an_example() -> None:
    text = docs.render()
    for spec in SPECS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{spec.name}` |"))
        for label in spec.labels:
            assert f"`{label}`" in row, (spec.name, label)
        assert spec.example and spec.example in text, spec.name
        assert spec.group in {g for g, _, _ in docs.GROUPS}, spec.name


def test_docs_generate_writes_the_file(tmp_path: Path) -> None:
    args = ["docs", "generate", "--dir", str(tmp_path), "--crds-dir", str(tmp_path / "crds")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "wrote" in result.output
    assert (tmp_path / "metrics.md").read_text() == docs.render()
    again = CliRunner().invoke(cli, args)
    assert "unchanged" in again.output
