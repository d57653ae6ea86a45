"""Print the overrides that pin an MST-family run to the knob another run solved.

``python -m sparselm.cli.pin_knob <run dir>`` reads the solved knob (``mst_knob``,
``mst_knob_value``) from that run's ``train_log.jsonl`` and prints
``method.target_reduction=null method.<knob key>=<value>``, which a second run appends to its
own overrides to keep the first run's value with its budget switched off (the MST study's
``pinned`` variants). Reading the finished run, rather than solving again when the workflow is
built, keeps the study DAG free of Hydra composition and FLOP solving.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sparselm.errors import ConfigError
from sparselm.methods.mst import KNOB_KEYS


def pin_overrides(run_dir: Path) -> list[str]:
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        raise ConfigError(f"{log} does not exist: the run to pin to has not trained")
    for line in log.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if "mst_knob" in record:  # the first logged step carries it
            knob, value = record["mst_knob"], float(record["mst_knob_value"])
            if knob not in KNOB_KEYS:
                raise ConfigError(
                    f"{log}: mst_knob={knob!r} is unknown; allowed: {list(KNOB_KEYS)}"
                )
            return ["method.target_reduction=null", f"method.{KNOB_KEYS[knob]}={value!r}"]
    raise ConfigError(f"{log} records no mst_knob: that run was not an MST-family method")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m sparselm.cli.pin_knob <run dir>", file=sys.stderr)
        return 2
    try:
        print(" ".join(pin_overrides(Path(args[0]))))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
