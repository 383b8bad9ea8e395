"""Atheris harness for one decoder of fuzz/targets.py: ``python -m fuzz.harness NAME [ARGS]``.

ARGS go to libFuzzer (corpus directories, ``-max_total_time=60``, ...). feedlog is imported
under atheris' instrumentation so the fuzzer is guided by coverage of feedlog's Python code.
Any exception other than a FeedlogError escaping the decoder is a finding: libFuzzer stops and
writes the input as a ``crash-*`` file.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["feedlog", "fuzz"]):
    from fuzz.targets import BY_NAME, run_one


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BY_NAME:
        sys.exit(f"usage: python -m fuzz.harness {{{','.join(BY_NAME)}}} [libFuzzer args]")
    target = BY_NAME[sys.argv[1]]

    def one_input(data: bytes) -> None:
        run_one(target, data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
