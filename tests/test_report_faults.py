"""A malformed metrics.json costs only its own run: the report lists it with why, on stderr too,
and reports the other runs (it used to stop the report with a traceback and no report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import report_cli
from tests.test_report import completed, make_run, rows

#: folder -> (what its metrics.json holds, the reason the report gives)
BAD = {
    "list": ("[1, 2]", "not a JSON object but a list"),
    "text_metric": (
        json.dumps({"posterior": "flow", "seed": 0, "status": "completed", "test/log_px": "high"}),
        'test/log_px is not a number: "high"',
    ),
    "invalid": ("{not json", "JSONDecodeError: Expecting property name"),
}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Two good runs of one configuration and one run of each kind of malformed record."""
    root = tmp_path / "sweep"
    make_run(root / "0", "gaussian", 0, **completed(-90.0, -93.0))
    make_run(root / "1", "gaussian", 1, **completed(-92.0, -94.0))
    for name, (text, _) in BAD.items():
        (root / name).mkdir()
        (root / name / "metrics.json").write_text(text)
    return root


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_malformed_records_are_listed_and_the_rest_reported(sweep):
    result = report_cli(str(sweep))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = (sweep / "report.md").read_text()
    assert "5 runs (2 completed, 3 unreadable)" in report
    table = rows(report)
    assert table["gaussian"][:3] == ["gaussian", "standard", "2"]
    assert "flow" not in table  # its only run is malformed
    listed = report.split("## Unreadable metrics.json")[1].split("##")[0]
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == len(BAD)
    for name, (_, reason) in BAD.items():
        assert f"- `{name}` (" in listed and reason in listed, name
        (line,) = [w for w in warned if f"{sweep / name}:" in w]
        assert reason in line
    assert (sweep / "report.csv").read_text().count("\n") == 6  # header and every run
