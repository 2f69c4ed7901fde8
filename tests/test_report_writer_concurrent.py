"""Two report writers on one folder: unique temporary files and atomic renames.

Four threads write the same file 150 times each with their own whole contents while two readers
read it; every write must succeed, every read must be one writer's whole text, and no temporary
file may be left behind.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bnlab.report.writer import _write_text

WRITERS, WRITES = 4, 150


def test_concurrent_writers_and_readers_see_whole_files(tmp_path: Path):
    target = tmp_path / "index.html"
    texts = [f"<html>{i}" + chr(ord("a") + i) * 200_000 + "</html>\n" for i in range(WRITERS)]
    _write_text(target, texts[0])
    errors: list[BaseException] = []
    partial: list[int] = []
    done = threading.Event()

    def write(i: int) -> None:
        try:
            for _ in range(WRITES):
                _write_text(target, texts[i])
        except BaseException as e:  # noqa: BLE001 -- collected and asserted below
            errors.append(e)

    def read() -> None:
        while not done.is_set():
            text = target.read_text(encoding="utf-8")
            if text not in texts:
                partial.append(len(text))

    writers = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert not errors, f"{len(errors)} writes failed, e.g. {errors[0]!r}"
    assert not partial, f"readers saw {len(partial)} partial files"
    assert target.read_text(encoding="utf-8") in texts
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary file left
