"""`feedlog export` / `import` / `bundle verify` as a user runs them, and a real FAT32 image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_cli import js, run


def ids(home: Path, feed: str) -> list[str]:
    return [m["id"] for m in js(home, "feed", feed)]


def test_a_to_stick_to_b_to_stick_to_c(tmp_path: Path) -> None:
    a, b, c, stick = (tmp_path / n for n in ("a", "b", "c", "stick"))
    stick.mkdir()
    for h in (a, b, c):
        run(h, "init")
    aid, bid = js(a, "whoami")["id"], js(b, "whoami")["id"]
    run(a, "publish", "hello from a")
    run(a, "publish", "a again")
    ex = js(a, "export", str(stick))
    assert ex["messages"] == 2 and ex["segments"] == ["00000001.seg"]
    assert js(a, "export", str(stick))["messages"] == 0  # incremental: nothing new

    run(b, "follow", aid)
    dry = js(b, "import", str(stick), "--dry-run")
    assert dry["new"] == 2 and dry["dry_run"] and js(b, "following")[0]["seq"] == 0
    im = js(b, "import", str(stick))
    assert im["ok"] and im["new"] == 2
    assert [r["new"] for r in im["feeds"] if r["feed"] == aid] == [2]
    text = run(b, "import", str(stick)).stdout
    assert "imported 0 new messages (2 already had" in text
    run(b, "publish", "b was here")
    ex = js(b, "export", str(stick))
    assert ex["messages"] == 2  # b's follow and post; a's feed is already on the stick

    run(c, "follow", bid)
    first = js(c, "import", str(stick))
    assert first["new"] == 2 and first["skipped_feeds"] == 1  # a is 2 hops away: unknown yet
    second = js(c, "import", str(stick))
    assert second["new"] == 2 and second["skipped_feeds"] == 0
    assert ids(c, aid) == ids(a, aid) and ids(c, bid) == ids(b, bid)
    v = js(c, "bundle", "verify", str(stick))
    assert v["ok"] and v["new"] == 4
    assert js(c, "verify")["ok"]


def test_cli_reports_damage_and_errors(tmp_path: Path) -> None:
    a, stick = tmp_path / "a", tmp_path / "stick"
    stick.mkdir()
    run(a, "init")
    run(a, "publish", "one")
    run(a, "publish", "two")
    js(a, "export", str(stick))
    seg = stick / "feedlog" / "00000001.seg"
    seg.write_bytes(seg.read_bytes()[:-3])  # a torn tail
    p = run(a, "bundle", "verify", str(stick), ok=False)
    assert p.returncode == 1 and "damage[torn-tail]" in p.stderr and "Traceback" not in p.stderr
    fresh = tmp_path / "fresh"
    run(fresh, "init")
    im = js(fresh, "import", str(stick), "--all")
    assert im["new"] == 1 and im["damage"][0]["code"] == "torn-tail"
    assert js(a, "export", str(stick))["reindexed"] == "summary-mismatch"  # repaired
    assert run(a, "bundle", "verify", str(stick)).returncode == 0
    p = run(a, "import", str(tmp_path / "nowhere"), ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[no-such-dir]")
    p = run(a, "import", str(tmp_path), ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[no-bundle]")
    p = run(a, "export", str(stick), "--feed", "feed_nope", ok=False)
    assert p.returncode == 2 and p.stderr.startswith("error[bad-id]")


def _fat_tools() -> str | None:
    missing = [t for t in ("mkfs.vfat", "mcopy", "mdir") if shutil.which(t) is None
               and not Path("/usr/sbin", t).exists()]
    if not missing:
        return None
    return f"needs {', '.join(missing)} (apt-get install dosfstools mtools)"


@pytest.mark.skipif(_fat_tools() is not None, reason=str(_fat_tools()))
def test_export_onto_a_real_fat32_image_and_back(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    staging = tmp_path / "staging"
    for d in (staging, out):
        d.mkdir()
    run(a, "init")
    run(b, "init")
    aid = js(a, "whoami")["id"]
    for i in range(5):
        run(a, "publish", f"message {i} for the stick")
    js(a, "export", str(staging))
    img = tmp_path / "stick.img"
    with open(img, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    mkfs = shutil.which("mkfs.vfat") or "/usr/sbin/mkfs.vfat"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run([mkfs, "-F", "32", str(img)], check=True, capture_output=True)
    subprocess.run(["mcopy", "-s", "-i", str(img), str(staging / "feedlog"), "::/"],
                   check=True, capture_output=True, env=env)
    listing = subprocess.run(["mdir", "-b", "-i", str(img), "::/feedlog"], check=True,
                             capture_output=True, text=True, env=env).stdout
    assert "00000001.seg" in listing.lower() and "summary.cbr" in listing.lower()
    subprocess.run(["mcopy", "-s", "-i", str(img), "::/feedlog", str(out)],
                   check=True, capture_output=True, env=env)
    copied = sorted(p.name.lower() for p in (out / "feedlog").iterdir())
    assert copied == ["00000001.seg", "summary.cbr"]
    im = js(b, "import", str(out), "--all")
    assert im["ok"] and im["new"] == 5
    assert ids(b, aid) == ids(a, aid)
    # and an incremental export onto the copy taken back from the stick
    run(a, "publish", "after the trip")
    assert js(a, "export", str(out))["messages"] == 1
    assert js(b, "import", str(out), "--all")["new"] == 1
