"""Running external commands (ip, nsenter, runsc) from asyncio and from plain code."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class CommandError(RuntimeError):
    """A command failed; the message has the command, its exit code and its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stderr = stderr
        text = stderr.strip()
        if len(text) > 4400:  # a Go panic: the cause is at the top, the place at the bottom
            text = f"{text[:4000]} [...] {text[-400:]}"
        super().__init__(f"{' '.join(args[-3:])} exited {returncode}: {text}")


@dataclass
class Result:
    """What a finished command printed."""

    returncode: int
    stdout: str
    stderr: str


async def run(
    args: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120.0,
    output: Path | None = None,
    started: Callable[[], None] | None = None,
) -> Result:
    """Run ``args``; with ``output`` its stdout and stderr go to that file (append).

    A detached sandbox inherits the command's stdout and stderr, so those must be a
    file, never a pipe: capturing them would hang until the sandbox exits.
    ``started`` is called once the process exists (fault tests crash there).
    """
    if output is not None:
        with output.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            if started is not None:
                started()
            try:
                returncode = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise CommandError(args, -9, f"timed out after {timeout} s") from None
        result = Result(returncode, "", _tail(output))
    else:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        if started is not None:
            started()
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CommandError(args, -9, f"timed out after {timeout} s") from None
        result = Result(proc.returncode or 0, out.decode(errors="replace"),
                        err.decode(errors="replace"))  # fmt: skip
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr)
    return result


def run_sync(
    args: Sequence[str], *, check: bool = True, timeout: float = 120.0, stdin: str | None = None
) -> Result:
    """Blocking :func:`run` for setup and cleanup paths outside an event loop;
    ``stdin`` is text fed to the command."""
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False,
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr)
    return result


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")
