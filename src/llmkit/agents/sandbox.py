"""Running untrusted Python: a subprocess with limits, in a temporary directory of its own.

What it enforces, and how:

- time: a wall-clock timeout, after which the whole process group is killed (and an RLIMIT_CPU
  backstop); an infinite loop ends as a tool error.
- memory: RLIMIT_AS (address space), so a 10 GB allocation fails with MemoryError in the child.
- files: an audit hook (PEP 578, installed before the code runs and impossible to remove from
  Python) refuses to open, list, create, change or delete anything outside the sandbox directory;
  reading is also allowed under the Python installation, so imports work. RLIMIT_FSIZE bounds
  what it may write.
- processes and network: the same hook refuses fork, exec, spawn, subprocess, signals to other
  processes, every socket operation, and ctypes (which could call the C library directly).
- environment: an isolated interpreter (``-I``: no user site, no PYTHON* variables), a minimal
  environment, its own session.

It is a guard for a teaching toolkit and a model's honest mistakes, not a boundary against a
determined attacker with a kernel exploit: run agents that face the internet in a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxResult", "run_python"]

_RUNNER = textwrap.dedent(r'''
    import os, sys
    _code = open(sys.argv[1], encoding="utf-8").read()
    _ROOT = os.path.realpath(os.getcwd())
    _READ = [_ROOT] + sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)})
    _BLOCK = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "os.kill",
              "os.killpg", "signal.pthread_kill", "pty.spawn", "os.chroot", "os.setuid", "os.setgid", "ctypes.", "socket.",
              "os.startfile", "winreg.", "webbrowser.open")
    _WRITE = ("os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.symlink", "os.link", "os.truncate",
              "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.move", "os.setxattr",
              "os.removexattr", "os.chflags", "os.lchmod", "os.lchown", "os.mkfifo", "os.mknod")

    def _inside(path, roots):
        if isinstance(path, int) or path is None:
            return True
        p = os.path.realpath(os.fsdecode(path))
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    def _hook(event, args, _inside=_inside, _PermissionError=PermissionError):
        if event.startswith(_BLOCK):
            raise _PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes", "_posixsubprocess"):
            raise _PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            write = bool(mode and any(c in str(mode) for c in "wax+")) or bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if not _inside(path, [_ROOT] if write else _READ):
                raise _PermissionError(f"sandbox: {'writing' if write else 'reading'} {os.fsdecode(path)} is outside the sandbox directory")
        elif event in ("os.listdir", "os.scandir", "os.chdir", "glob.glob") and args and not _inside(args[0] if args[0] is not None else ".", _READ):
            raise _PermissionError(f"sandbox: {event} {args[0]} is outside the sandbox directory")
        elif event in _WRITE:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a, [_ROOT]):
                    raise _PermissionError(f"sandbox: {event} {os.fsdecode(a)} is outside the sandbox directory")

    sys.addaudithook(_hook)
    del _hook, _inside
    sys.argv = ["<sandbox>"]
    exec(compile(_code, "<sandbox>", "exec"), {"__name__": "__main__"})
''')


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def error(self) -> str:
        """One line on what went wrong (the exception's last traceback line, a timeout, a kill)."""
        if self.timed_out:
            return "the code ran past its time limit and was stopped"
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
        if self.returncode is not None and self.returncode < 0:
            return f"the code was killed by signal {signal.Signals(-self.returncode).name}"
        return f"the code exited with status {self.returncode}"


def _limits(memory_mb: int, cpu_s: int, file_mb: int):
    def apply():
        import resource

        os.setsid()  # its own process group: a timeout kills everything it started
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 2**20, file_mb * 2**20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(code: str, *, timeout: float = 10.0, memory_mb: int = 512, file_mb: int = 16, max_output: int = 8000,
               workdir: str | os.PathLike | None = None) -> SandboxResult:
    """Run ``code`` in a fresh sandboxed interpreter (see the module docstring), in ``workdir``
    or a temporary directory removed afterwards; stdout and stderr are cut to ``max_output``."""
    if sys.platform == "win32":  # pragma: no cover
        raise OSError("the python sandbox needs a POSIX system (resource limits, process groups)")
    if not 0 < timeout <= 600 or memory_mb < 64:
        raise ValueError("timeout must be in (0, 600] seconds and memory at least 64 MB")
    with tempfile.TemporaryDirectory(prefix="llmkit-sandbox-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp) / "work"
        work.mkdir(parents=True, exist_ok=True)
        (Path(tmp) / "runner.py").write_text(_RUNNER, encoding="utf-8")
        (work / "main.py").write_text(code, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
        proc = subprocess.Popen([sys.executable, "-I", str(Path(tmp) / "runner.py"), "main.py"], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limits(memory_mb, int(timeout) + 1, file_mb))
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            timed_out = True
        finally:
            try:  # anything it left running in its group goes too
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def cut(b: bytes) -> str:
        s = b.decode("utf-8", errors="replace")
        return s if len(s) <= max_output else s[:max_output] + f"\n... ({len(s) - max_output} more characters)"

    return SandboxResult(cut(out), cut(err), proc.returncode, timed_out)
