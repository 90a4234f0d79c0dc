"""The API's image processes: they outlive the thread that started them, die with the API process,
and hand engine errors back as the same error class."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pyvips

from mediajobs.media import mogr2
from mediajobs.media.imagepool import ImagePool
from mediajobs.media.vips import ImageLimits, ImageResolutionExceed


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "p.png"
    pyvips.Image.black(64, 48).pngsave(str(path))
    return path


def test_processes_outlive_the_thread_that_started_them(png: Path) -> None:
    pool = ImagePool(1)
    try:
        rule = mogr2.parse("imageMogr2/rotate/90")
        first: list[int] = []
        # The API's thread-pool threads end when idle: the pool they started must not end with them.
        starter = threading.Thread(
            target=lambda: first.append(len(pool.process(png, rule, ImageLimits())[0]))
        )
        starter.start()
        starter.join()
        pids = pool.pids()
        assert first and len(pids) == 1
        time.sleep(0.3)  # give a wrongly armed parent-death signal time to land
        data, mime = pool.process(png, rule, ImageLimits())
        assert mime == "image/png" and pyvips.Image.new_from_buffer(data, "").width == 48
        assert pool.pids() == pids
    finally:
        pool.close()


def test_engine_errors_come_back_as_themselves(png: Path) -> None:
    pool = ImagePool(1)
    try:
        with pytest.raises(ImageResolutionExceed) as exc:
            pool.process(png, mogr2.parse("imageMogr2/thumbnail/10x"), ImageLimits(max_pixels=100))
        assert exc.value.code == "ImageResolutionExceed" and "64x48" in exc.value.message
        with pytest.raises(mogr2.BadRule) as bad:  # a class whose constructor takes other arguments
            pool.process(png, mogr2.parse("imageMogr2/cut/10x10x500x500"), ImageLimits())
        assert bad.value.code == "InvalidArgument" and "cut" in bad.value.message
    finally:
        pool.close()


def test_processes_die_with_their_parent(tmp_path: Path, png: Path) -> None:
    script = (
        "import sys, time\n"
        "from mediajobs.media import mogr2\n"
        "from mediajobs.media.imagepool import ImagePool\n"
        "from mediajobs.media.vips import ImageLimits\n"
        "pool = ImagePool(2)\n"
        f"pool.process({str(png)!r}, mogr2.parse('imageMogr2/rotate/90'), ImageLimits())\n"
        "print(*pool.pids(), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids  # started on demand: one so far
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids):
            assert time.monotonic() < deadline, f"image processes {pids} outlived their parent"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"
