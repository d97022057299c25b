"""Image checks in processes of their own: `python -m core.importers.check_worker` reads one JSON list of image
paths per line on stdin and writes one JSON list of results per line on stdout (`[hash, width, height, nbytes]`
or the reason the image is refused).

Plain subprocesses rather than `multiprocessing`: under Streamlit the `__main__` module is the app's script, which
multiprocessing's spawn and fork-server children would run again; a subprocess runs only this module.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import IO

from core.errors import ConcordError
from core.importers.validation import ImageInfo, check_batch


def _encode(result: ImageInfo | str) -> str | list:
    return result if isinstance(result, str) else [result.hash, result.width, result.height, result.nbytes]


def _decode(item: str | list) -> ImageInfo | str:
    return item if isinstance(item, str) else ImageInfo(str(item[0]), int(item[1]), int(item[2]), int(item[3]))


class CheckerProcesses:
    """`workers` checking processes fed batches round-robin; `submit` returns at once, `next_result` gives the
    results in submission order. A reader thread per process drains its output, so no pipe ever fills."""

    def __init__(self, workers: int) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self._procs = [subprocess.Popen([sys.executable, "-m", "core.importers.check_worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                       for _ in range(max(1, workers))]
        self._replies: list[queue.Queue] = [queue.Queue() for _ in self._procs]
        for proc, replies in zip(self._procs, self._replies):
            threading.Thread(target=self._drain, args=(proc.stdout, replies), daemon=True).start()
        self._order: deque[int] = deque()
        self._next = 0
        self._stopped_why: dict[int, str] = {}

    @staticmethod
    def _drain(out: IO[bytes], replies: queue.Queue) -> None:
        for line in out:
            replies.put(line)
        replies.put(None)

    def __len__(self) -> int:
        """Batches submitted whose results have not been taken yet."""
        return len(self._order)

    def submit(self, paths: list[str]) -> None:
        w = self._next
        self._next = (w + 1) % len(self._procs)
        try:
            self._procs[w].stdin.write((json.dumps(paths) + "\n").encode("ascii"))
            self._procs[w].stdin.flush()
        except OSError:          # the process has gone: its pipe is closed
            raise self._stopped(w) from None
        self._order.append(w)

    def next_result(self) -> list[ImageInfo | str]:
        """The results of the oldest batch not taken yet (waits for them)."""
        w = self._order.popleft()
        line = self._replies[w].get()
        if line is None:
            raise self._stopped(w)
        return [_decode(item) for item in json.loads(line)]

    def _stopped(self, w: int) -> ConcordError:
        """The error for process `w` having stopped, with the last line it wrote to stderr (its exception)."""
        if w not in self._stopped_why:
            self._procs[w].wait()
            err = self._procs[w].stderr.read().decode("utf-8", "replace").strip().splitlines()
            self._stopped_why[w] = (f"an image-checking process stopped (exit status {self._procs[w].returncode})"
                                    + (f": {err[-1]}" if err else ""))
        return ConcordError(self._stopped_why[w])

    def close(self) -> None:
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.kill()
            proc.wait()

    def __enter__(self) -> "CheckerProcesses":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:
    for line in sys.stdin.buffer:
        results = check_batch(json.loads(line))
        sys.stdout.write(json.dumps([_encode(r) for r in results]) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
