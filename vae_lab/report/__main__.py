"""Command line of the report: ``python -m vae_lab.report DIR... [--out DIR]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vae_lab.records.collect import NoRunsError
from vae_lab.report.write import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vae_lab.report",
        description="Aggregate the runs under the folders into report.md, report.csv and plots.",
    )
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="run or sweep folder")
    parser.add_argument("--out", type=Path, help="where to write (default: the first DIR)")
    args = parser.parse_args(argv)
    # the runs left out (write_report's warnings) are said on stderr, one line each
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING, stream=sys.stderr)
    try:
        written = write_report(args.folders, args.out)
    except NoRunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
