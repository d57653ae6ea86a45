"""Export a run or checkpoint folder to a Hugging Face GPT-2 folder.

    python -m sparselm.cli.export checkpoint=<run-or-checkpoint dir> out=<dir>

The result loads with ``AutoModelForCausalLM.from_pretrained(out)`` and
``AutoTokenizer.from_pretrained(out)``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from sparselm.errors import ConfigError, SparselmError

KEYS = ("checkpoint", "out")
USAGE = "usage: python -m sparselm.cli.export checkpoint=<run-or-checkpoint dir> out=<dir>"


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """Plain ``key=value`` pairs; both keys are required and nothing else is allowed."""
    args: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"{item!r}: unknown argument, allowed: checkpoint=..., out=...")
        if not value:
            raise ConfigError(f"{key}: empty value ({USAGE})")
        args[key] = value
    for key in KEYS:
        if key not in args:
            raise ConfigError(f"{key}: required ({USAGE})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        # imported late so argument errors do not pay for importing transformers
        from sparselm.hf_export import export_checkpoint

        out = export_checkpoint(Path(args["checkpoint"]), Path(args["out"]))
    except SparselmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args['checkpoint']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
