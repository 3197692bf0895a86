"""The sandbox: a process that runs one student chapter file's functions for the grader.

The grader (:mod:`minigen.course.grading_plugin`) never imports a student's file.
For each chapter it starts this module in a child process, which loads the file
and answers calls over two pipes (:mod:`minigen.course.wire`): the checks, their
expected values and the verdicts stay in the grader, and what comes back is
data. If the child dies or hangs, the check that was calling it fails and the
next call starts a fresh one.

Before the student's file runs, the child

* hides minigen's own solutions of the chapter's tasks (:func:`hide_references`):
  the functions' code is replaced by an error that says so, and looking one up by
  name (``from minigen... import``, ``getattr``, ``importlib``) raises ImportError;
  the check of one task still gets the reference of the chapter's other tasks, as
  calls back into the grader, in the student's module and where library code calls
  them (a convolution's ``im2col``). The other chapters' tasks stay minigen's own
  (each is hidden in its own chapter's sandbox), so a model's layers run here;
* gives up root, if it has it, for the ``nobody`` user, and dies with its parent;
* limits itself: no new processes or threads (RLIMIT_NPROC 0), no file growth
  (RLIMIT_FSIZE 0), a CPU time limit;
* installs an audit hook (:func:`_deny`) that refuses writing, deleting or renaming
  files, starting processes, sending signals, sockets, ctypes, and reading the
  source files of the reference solutions (so ``importlib.reload`` cannot bring
  them back).

The limits and the hook are defence in depth, not the boundary: the boundary is
that the verdicts are decided in another process from data. See the threat model
in exercises/README.md.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

from . import wire
from .exercises import CHAPTERS, TASKS, reference_function

READY_TIMEOUT_MESSAGE = "did not finish importing"


# ----------------------------------------------------------------------------
# The child: hide the reference, lock down, load the chapter, serve


_helpers: dict = {}  # during one call of the student's function: the reference of the chapter's other tasks


def hide_references(chapter=None) -> list:
    """Make minigen's solutions of ``chapter``'s tasks (default: every task) unusable in this
    process; returns the files that hold the source (and compiled code) of every task's
    solution, which the audit hook then refuses to open.

    A hidden function's code is replaced: called by library code while a check of another
    task of the chapter runs, it calls that task's reference back in the grader (the
    masked convolution's ``F.conv2d`` reaches ``im2col``, the training loss
    ``categorical_log_prob``); otherwise, and always for the task being graded, it
    raises. The other chapters' tasks stay minigen's own: each is graded in its own
    chapter's sandbox, where it is hidden."""
    functions = {}
    for task in TASKS:
        function = reference_function(task)
        if chapter is None or task.chapter == chapter:
            functions[id(function)] = (function, task)
    for function, task in functions.values():
        if function.__code__.co_freevars:
            raise RuntimeError(f"task {task.id}: {task.function} is a closure; a graded function must be top-level")
        function.__code__ = _hidden_code(task)
        function.__defaults__ = function.__kwdefaults__ = None
    for module in [m for name, m in list(sys.modules.items()) if name.split(".")[0] == "minigen" and m]:
        names = {name: functions[id(value)][1] for name, value in vars(module).items() if id(value) in functions}
        if names:
            module.__class__ = _module_hiding(names)
    return _source_files({task.module for task in TASKS})


def hidden_message(task) -> str:
    return (f"{task.function} is minigen's own solution of task {task.id}; it is hidden while your code "
            "is graded: write the function yourself")


def _hidden_code(task):
    namespace = {}
    exec(compile(f"def {task.function}(*args, **kwargs):\n"
                 f"    return __import__({__name__!r}, fromlist=['_']).call_hidden({task.id!r}, args, kwargs)\n",
                 "<hidden during grading>", "exec"), namespace)
    return namespace[task.function].__code__


def call_hidden(task_id: str, args, kwargs):
    """What a hidden task function does: call its reference in the grader if the check
    running now provided it (a check of another task), else raise that it is hidden."""
    task = next(task for task in TASKS if task.id == task_id)
    helper = _helpers.get(task.function)
    if helper is None:
        raise RuntimeError(hidden_message(task))
    return helper(*args, **kwargs)


def _module_hiding(names: dict):
    """A module class whose attribute lookup of ``names`` raises ImportError with the reason."""
    def __getattribute__(module, name):
        if name in names:
            raise ImportError(hidden_message(names[name]))
        return types.ModuleType.__getattribute__(module, name)
    return type("ModuleWithHiddenSolutions", (types.ModuleType,), {"__getattribute__": __getattribute__})


def _source_files(module_names) -> set:
    files = set()
    for name in module_names:
        source = sys.modules[name].__file__
        files |= {os.path.realpath(source), os.path.realpath(importlib.util.cache_from_source(source))}
    return files


_DENIED = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.startfile",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "os.remove",
    "os.rename", "os.rmdir", "os.mkdir", "os.link", "os.symlink", "os.truncate", "os.chmod", "os.chown",
    "os.chflags", "os.utime", "os.setxattr", "os.removexattr", "shutil.rmtree", "shutil.copyfile",
    "socket.__new__", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
    "os.chdir", "os.fchdir", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents",
}
_UNAUDITED_MODULES = ("_posixsubprocess",)  # it forks without an audit event: its import is refused
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _deny(hidden_files: set):
    """The audit hook of the sandbox: refuses what graded code has no business doing."""
    def hook(event, args):
        if event in _DENIED or (event == "import" and args[0] in _UNAUDITED_MODULES):
            what = f"importing {args[0]}" if event == "import" else event
            raise PermissionError(f"{what} is not allowed while your code is graded")
        if event == "open" and not isinstance(args[0], int):
            path, mode, flags = args
            if (isinstance(mode, str) and set(mode) & set("wax+")) or (flags or 0) & _WRITE_FLAGS:
                raise PermissionError(f"writing files ({path}) is not allowed while your code is graded")
            real = os.path.realpath(os.fsdecode(path))
            if real in hidden_files or os.path.isdir(real):
                raise PermissionError(f"opening {path} is not allowed while your code is graded")
    return hook


def _forget_unaudited_modules() -> None:
    """Drop the loaded modules that could start a process unaudited, and the references to them,
    so that reaching one again takes an import, which the hook refuses."""
    for name in _UNAUDITED_MODULES:
        module = sys.modules.pop(name, None)
        for loaded in list(sys.modules.values()) if module else ():
            for attribute, value in list(getattr(loaded, "__dict__", {}).items()):
                try:
                    if value is module or getattr(value, "__module__", None) == name:
                        delattr(loaded, attribute)
                except Exception:  # an object with an odd __getattr__: not the module's
                    continue


def _drop_privileges() -> bool:
    """As root, become ``nobody``: then the files, processes and memory of the grader are out of
    reach. Not where ``nobody`` could not read Python or minigen (an interpreter under /root):
    the audit hook and the limits remain. Returns whether it did."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    import pwd
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return False
    if not all(_open_to_everyone(Path(p)) for p in (sys.base_prefix, sys.prefix, Path(__file__).parents[2])):
        return False
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    return True


def _open_to_everyone(path: Path) -> bool:
    """Whether every user may read ``path`` and enter every folder on the way to it."""
    return all(os.stat(folder).st_mode & 0o005 == 0o005 for folder in [path, *path.parents])


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _limit(cpu_seconds: int) -> None:
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    for limit, value in ((resource.RLIMIT_NPROC, 0), (resource.RLIMIT_FSIZE, 0),
                         (resource.RLIMIT_CPU, cpu_seconds)):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass  # a limit the system does not allow lowering: the audit hook remains


def _load(path: str, source: str):
    """The student's chapter file as a module, or the one-line reason it could not be imported."""
    name = f"graded_{Path(path).stem}"
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module  # dataclasses and typing look a module up by name
    try:
        exec(compile(source, path, "exec"), module.__dict__)
    except BaseException as error:  # the student's file: any failure is reported, not fatal
        return None, f"{path} could not be imported: {type(error).__name__}: {error}"
    return module, None


def _task_server(module, chapter_tasks):
    """serve_task for the channel: the student's function, called with the reference of the
    chapter's other tasks (calls back into the grader) in its module for the duration."""
    def serve_task(name: str, helpers: dict):
        function = getattr(module, name)

        def with_reference_helpers(*args, **kwargs):
            replaced = {helper: module.__dict__[helper] for helper in helpers
                        if helper in chapter_tasks and helper != name and helper in module.__dict__}
            module.__dict__.update({helper: helpers[helper] for helper in replaced})
            _helpers.clear()
            _helpers.update({helper: value for helper, value in helpers.items()
                             if helper in chapter_tasks and helper != name})
            try:
                return function(*args, **kwargs)
            finally:
                _helpers.clear()
                module.__dict__.update(replaced)
        return with_reference_helpers
    return serve_task


def main(argv) -> None:
    """python -m minigen.course.sandbox PATH READ_FD WRITE_FD PARENT_PID CPU_SECONDS"""
    path, read_fd, write_fd, parent, cpu_seconds = argv[0], *map(int, argv[1:5])
    source = Path(path).read_text(errors="replace")  # before giving up root: the file may be root's only
    sys.dont_write_bytecode = True
    chapter = next((c for c, (stem, _) in CHAPTERS.items() if stem == Path(path).stem), None)
    hidden_files = hide_references(chapter)
    chapter_tasks = {task.function for task in TASKS if task.chapter == chapter}
    _drop_privileges()
    _die_with_parent(parent)
    _limit(cpu_seconds)
    _forget_unaudited_modules()
    sys.addaudithook(_deny(hidden_files))
    module, problem = _load(path, source)
    channel = wire.Channel(read_fd, write_fd, serve_task=_task_server(module, chapter_tasks),
                           catch=BaseException, where=wire.last_frame_in(path))
    present = sorted(name for name in chapter_tasks if module is not None and callable(getattr(module, name, None)))
    channel.send("ready", {"functions": present, "problem": problem})
    channel.serve_forever()
    os._exit(0)  # no atexit handler or finaliser of the student's code runs


# ----------------------------------------------------------------------------
# The grader's side


BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from minigen.course.sandbox import main; main(sys.argv[2:])"


class Sandbox:
    """The grader's handle on one chapter file's sandbox process, started on first use
    and again after it died or was stopped."""

    def __init__(self, path, cpu_seconds: int):
        self.path, self.cpu_seconds = str(path), int(cpu_seconds)
        self.process, self.channel, self.functions = None, None, set()
        self.problem = None  # why the chapter cannot be graded, once known (it failed to import)

    def call(self, task, args, kwargs, helpers: dict):
        """``task``'s function of the chapter file, called with ``args``; its errors are raised here."""
        self._start()
        if task.function not in self.functions:
            raise RuntimeError(f"{self.path} has no function {task.function} (task {task.id})")
        try:
            return self.channel.call({"task": task.function}, args, kwargs, helpers=helpers)
        except BaseException as error:
            if wire.is_remote(error):
                raise
            code = self.stop(grace=1.0 if isinstance(error, wire.PeerGone) else 0.0)
            if isinstance(error, wire.PeerGone):
                raise RuntimeError(f"the process running your code died (exit code {code}) during this check; "
                                   "it is restarted for the next one") from None
            raise

    def _start(self) -> None:
        if self.problem:
            raise RuntimeError(self.problem)
        if self.process is not None:
            return
        to_child, from_parent = os.pipe()
        from_child, to_parent = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        command = [sys.executable, "-I", "-B", "-c", BOOT, package_root, self.path, str(to_child), str(to_parent),
                   str(os.getpid()), str(self.cpu_seconds)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "LANG": os.environ.get("LANG", "C.UTF-8")}
        try:
            self.process = subprocess.Popen(command, pass_fds=(to_child, to_parent), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                            env=env, start_new_session=True)
        finally:
            os.close(to_child)
            os.close(to_parent)
        self.channel = wire.Channel(from_child, from_parent)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        try:
            header, _ = self.channel.receive()
            if header.get("kind") != "ready":
                raise wire.WireError("the sandbox did not say it was ready")
        except BaseException as error:
            code = self.stop(grace=1.0 if isinstance(error, wire.PeerGone) else 0.0)
            if isinstance(error, wire.WireError):
                self.problem = f"{self.path} could not be imported: its process died (exit code {code}) importing it"
                raise RuntimeError(self.problem) from None
            if not isinstance(error, Exception):  # the time limit: do not import it again for every check
                self.problem = f"{self.path} {READY_TIMEOUT_MESSAGE}"
            raise
        self.functions = {str(name) for name in header.get("functions", [])}
        if header.get("problem"):
            self.problem = str(header["problem"])[:2000]
            self.stop()
            raise RuntimeError(self.problem)

    def stop(self, grace: float = 0.0):
        """Kill the sandbox (and anything in its session) and reap it; returns its exit code.
        ``grace``: seconds to let a process whose pipe closed finish dying, so its own code is seen."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if grace:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
        code = process.wait()
        for fd in (self.channel.read_fd, self.channel.write_fd):
            os.close(fd)
        self.channel = None
        return code


if __name__ == "__main__":
    main(sys.argv[1:])
