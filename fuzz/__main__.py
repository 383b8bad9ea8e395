"""Run every atheris harness for a while and summarise: ``python -m fuzz [--seconds N]``.

Each target runs in its own process (libFuzzer never returns) for ``--seconds`` seconds, seeded
with the target's seeds plus the corpus kept from earlier runs in ``--dir`` (default ``.fuzz``),
so longer runs build on shorter ones. Inputs that crash land in ``DIR/findings``. The summary
(executions, coverage, findings per target) is printed and saved as ``DIR/summary.json``; the
exit status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from fuzz.targets import BY_NAME, TARGETS


def run_target(name: str, seconds: int, root: Path) -> dict[str, object]:
    corpus = root / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    findings = root / "findings"
    findings.mkdir(parents=True, exist_ok=True)
    for seed in BY_NAME[name].seeds():
        (corpus / ("seed-" + hashlib.sha1(seed).hexdigest())).write_bytes(seed)
    before = set(findings.iterdir())
    cmd = [sys.executable, "-m", "fuzz.harness", name, str(corpus),
           f"-max_total_time={seconds}", f"-artifact_prefix={findings}/{name}-",
           "-max_len=16384", "-timeout=20", "-print_final_stats=1", "-close_fd_mask=1"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    took = time.monotonic() - started
    log = proc.stderr
    (root / f"{name}.log").write_text(log)
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    new = sorted(str(p) for p in set(findings.iterdir()) - before)
    return {"target": name, "seconds": round(took, 1), "executions": int(execs[-1]) if execs else
            None, "coverage": int(cov[-1]) if cov else None, "corpus": len(list(corpus.iterdir())),
            "findings": new, "exit": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=30, help="per target")
    ap.add_argument("--dir", type=Path, default=Path(".fuzz"))
    ap.add_argument("--targets", default=",".join(t.name for t in TARGETS))
    args = ap.parse_args()
    rows = []
    for name in args.targets.split(","):
        if name not in BY_NAME:
            sys.exit(f"unknown target {name!r}; known: {', '.join(BY_NAME)}")
        row = run_target(name, args.seconds, args.dir)
        rows.append(row)
        found = row["findings"]
        print(f"{name:15} {row['seconds']:>7}s  {row['executions'] or 0:>10} execs  "
              f"cov {row['coverage'] or 0:>5}  corpus {row['corpus']:>5}  "
              f"findings {len(found) if isinstance(found, list) else 0}", flush=True)
    (args.dir / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    total = sum(int(r["executions"] or 0) for r in rows)  # type: ignore[call-overload]
    bad = [f for r in rows for f in r["findings"]]  # type: ignore[attr-defined]
    print(f"total: {total} executions, {len(bad)} finding(s)")
    for f in bad:
        print(f"  finding: {f}  (replay: python -m fuzz.harness NAME {f})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
