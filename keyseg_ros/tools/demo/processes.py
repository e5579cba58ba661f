"""The processes the demo starts (keyseg_node, the query tool, one image player per scene), each
with its output in a log file, so that all of them are stopped whatever happens.

Each runs in its own session (our Ctrl-C does not reach it: the demo stops it, players and the
query tool first, the node last) and gets SIGTERM if the demo dies without stopping it.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from pathlib import Path

from keyseg_core.cli.demo import parent_death_signal
from keyseg_ros.tools.common import stop_process

STOP_TIMEOUT_S = 30.0  # per process, after SIGINT, before SIGKILL


class Proc:
    """A started process: its output goes to a log file; the query tool also gets a stdin pipe and
    its lines in a queue."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict, *, feed: bool = False) -> None:
        self.name, self.log = name, log
        self.lines: queue.Queue[str] = queue.Queue()
        self._log_file = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE if feed else self._log_file, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,  # our Ctrl-C does not hit it: we stop it
            preexec_fn=parent_death_signal())
        self._reader = None
        self.fed = False  # a line was written to its stdin
        if feed:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._log_file.write(line)
            self._log_file.flush()
            self.lines.put(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 2500) -> str:
        self._log_file.flush()
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def send_line(self, text: str) -> None:
        self.fed = True
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGINT (as Ctrl-C or `ros2 launch` would), then SIGKILL after `timeout`; the exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
                if self.fed:  # the query tool reads its input: it ends at the end of it, and must
                    self.proc.wait(timeout=10.0)  # not get a signal while it shuts down
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc, timeout)
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        self._log_file.close()
        return self.proc.returncode


class Processes:
    """Every process the demo starts, so that all of them are stopped whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Proc] = []
        self.exit_codes: dict[int, int] = {}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")

    def start(self, name: str, argv: list[str], *, feed: bool = False) -> Proc:
        """Start `argv` as `name` (its log: <logs>/<name>.log)."""
        proc = Proc(name, argv, self.logs / f"{name}.log", self.env, feed=feed)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc) -> int:
        """Stop one of them now (a player whose scene is done); its exit code."""
        code = proc.stop()
        self.exit_codes[proc.pid] = code
        return code

    def stop_all(self) -> None:
        """Players and the query tool first, the node last; each with its own SIGINT."""
        for proc in sorted(self.started, key=lambda p: p.name == "keyseg_node"):
            if proc.pid not in self.exit_codes:
                self.stop(proc)

    def report(self) -> list[dict]:
        """Name, pid and exit code (None while running) of each, in start order."""
        return [{"name": p.name, "pid": p.pid, "exit_code": self.exit_codes.get(p.pid)} for p in self.started]
