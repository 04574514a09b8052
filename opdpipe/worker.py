"""A resident worker for local runs on Linux: torch, transformers and lm-eval imported once, each job forked from it.

Every rule script is a new Python process, and importing torch (about 2 s), then transformers and
lm-eval (several more) is a large share of a short job. The Snakefile's `onstart` starts this
worker for a local run (`python -m opdpipe.worker SOCKET PARENT_PID`); each rule script, when its
`_log` import calls `delegate()`, sends its Snakemake-generated script file, argv, cwd, environment,
sys.path and standard streams to the worker, which forks a child that runs the script as a fresh
process would, with those modules already imported. The script's process waits and exits with the
child's exit status.

- The job's numbers do not change: it runs the same code on the same data, seeds and thread count
  (the worker runs no torch operator before it forks; each job sets its own threads).
- A cancelled job takes its child with it: the child's process group is killed when the script's
  process goes away (its connection closes), however it ended.
- A script that cannot use the worker runs where it is: no worker, another Python environment
  (`conda:`), or a run under a cluster executor (the Snakefile starts none there).
- The worker ends when the Snakemake process that started it ends.
- Snakemake's `benchmark:` files time the script's process: their `s` column is the job's wall time
  as before, but their memory and CPU columns measure the waiting process, not the child.
  `OPDPIPE_RESIDENT_WORKER=0` turns the worker off (every job its own process again).
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback

SOCKET_ENV = "OPDPIPE_WORKER_SOCKET"  # set by the Snakefile for the jobs of a local run
SWITCH_ENV = "OPDPIPE_RESIDENT_WORKER"  # "0" turns the worker off; "1" or unset: on for local runs
_INSIDE_ENV = "OPDPIPE_IN_WORKER"  # set in a forked job: its own _log import must not delegate again
# Imported before the first job is forked (every job that computes needs torch), then the rest one by one
# while no job is waiting: early jobs import what they need themselves, later ones find it imported.
PRELOAD = ("torch", "opdpipe.plain_llama", "opdpipe.trainer", "opdpipe.train_job")
PRELOAD_IDLE = ("transformers", "transformers.models.llama.modeling_llama", "datasets", "lm_eval",
                "lm_eval.models.huggingface", "lm_eval.evaluator", "opdpipe.evaluate", "snakemake.iocontainers",
                "snakemake.logging", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "opdpipe.tracking",
                "pandas", "opdpipe.report")
# Every job's environment defaults, set by the rule scripts (their _log) before anything is imported. The
# worker starts with them too: some libraries read them once, at import (huggingface_hub's offline mode).
JOB_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
# Snakemake sets these to a job's threads; OpenMP and OpenBLAS read them when loaded. The worker loads them
# as a one-thread job would (the default study's), and each job sets torch's threads from its own value.
THREAD_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_HEADER = struct.Struct("!Q")
_REFUSED = b"refused"
_LOG = None  # the worker's log, kept apart from the streams each job takes over


def wanted(env=os.environ, platform: str = sys.platform) -> bool:
    """Whether a local run starts the worker: OPDPIPE_RESIDENT_WORKER unset, 1 or 0 (anything else is an
    error), and on Linux only (macOS's system libraries are not safe to use in a child forked after they
    were loaded, the reason Python's multiprocessing spawns there)."""
    value = env.get(SWITCH_ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{SWITCH_ENV}={value!r}: allowed are 1 (a resident worker for local runs on Linux, the "
                         "default) or 0 (every job its own process)")
    return value == "1" and platform.startswith("linux")


# ---------------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------------
def serve(path: str, parent: int, preload=PRELOAD, idle=PRELOAD_IDLE, poll: float = 1.0) -> None:
    """Listen on the Unix socket `path` until process `parent` ends; fork one child per connection.
    `preload` is imported before the first, `idle` one module at a time while no client waits."""
    global _LOG
    _LOG = os.fdopen(os.dup(2), "w", buffering=1)
    for key, value in {**JOB_ENV, **dict.fromkeys(THREAD_ENV, "1")}.items():
        os.environ.setdefault(key, value)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # clients that connect while the imports run wait in the backlog
    for name in preload:
        _import(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished children are reaped by the kernel
    _say(f"worker {os.getpid()}: ready at {path}")
    pending = list(idle)
    try:
        while os.getppid() == parent:  # the Snakemake process that started it still runs
            listener.settimeout(0.05 if pending else poll)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if pending:
                    _import(pending.pop(0))
                    if not pending:
                        _say(f"worker {os.getpid()}: imported {', '.join(idle)}")
                continue
            if os.fork() == 0:
                listener.close()
                _child(conn)  # never returns
            conn.close()
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)
            try:
                os.rmdir(os.path.dirname(path))  # the folder start() made for it
            except OSError:
                pass


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError:  # an optional module not installed: the jobs that need it import it themselves
        pass


def _child(conn: socket.socket) -> None:
    """One job: take over the client's streams, environment and directory, run its script, report the status."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the job's own subprocesses are waited for as usual
        os.setsid()  # its own process group: a cancelled job takes its subprocesses with it
        req = _receive(conn)
        if req["prefix"] != sys.prefix or req["executable"] != sys.executable:
            _say(f"job {os.getpid()}: refused {req['executable']} (this worker runs {sys.executable})")
            conn.sendall(_REFUSED)  # another Python environment: the script runs where it is
            os._exit(0)
        _say(f"job {os.getpid()}: {os.path.basename(req['script'])} in {req['cwd']}")
        done = threading.Event()
        threading.Thread(target=_watch, args=(conn, done), daemon=True).start()
        start = time.perf_counter()
        code = _run(req)
        done.set()
        _say(f"job {os.getpid()}: exit {code} after {time.perf_counter() - start:.1f} s, {_usage()}")
    except BaseException:  # noqa: BLE001 -- reported to the job's stderr, then the status says it failed
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        try:
            conn.sendall(str(code).encode())
        finally:
            os._exit(code)


def _say(line: str) -> None:
    """A line in the worker's own log (its stderr when it started; a job's stderr is the job's)."""
    if _LOG is not None:
        print(line, file=_LOG, flush=True)


def _usage() -> str:
    """This job's CPU time and peak memory, with its subprocesses': what the `benchmark:` files measured
    when the job was the process Snakemake started (a forked child's counters start at zero)."""
    import resource

    own, subs = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + subs.ru_utime + subs.ru_stime
    return f"cpu {cpu:.1f} s, max rss {max(own.ru_maxrss, subs.ru_maxrss) // 1024} MB"


def _receive(conn: socket.socket) -> dict:
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(head) != _HEADER.size or len(fds) != 3:
        raise ConnectionError("malformed request")
    for target, fd in enumerate(fds):  # the client's stdin, stdout and stderr become this process's
        os.dup2(fd, target)
        os.close(fd)
    (size,) = _HEADER.unpack(head)
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(min(1 << 20, size - len(data)))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    return json.loads(data)


def _watch(conn: socket.socket, done: threading.Event) -> None:
    """Kill this job's process group when the client goes away before the job ends (it was cancelled)."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    if not done.is_set():
        os.killpg(0, signal.SIGKILL)


def _run(req: dict) -> int:
    """Run the client's script as its __main__ would have; its exit status."""
    import runpy

    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    os.environ[_INSIDE_ENV] = "1"
    sys.argv, sys.path[:] = req["argv"], req["path"]
    _as_a_new_process()
    try:
        runpy.run_path(req["script"], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # what the job registered runs as at a normal exit
    return code


def _as_a_new_process() -> None:
    """What a new process takes from its environment or the OS, taken again after the fork: torch's
    threads from OMP_NUM_THREADS (the worker's OpenMP read its own once, when loaded), the temporary
    folder from TMPDIR (Snakemake's per job), and the unseeded `random` and NumPy generators from the
    OS's entropy (every child would otherwise start from the worker's state). torch's unseeded default
    generator is the same fixed state in both (the worker draws nothing)."""
    import random
    import tempfile

    n = os.environ.get("OMP_NUM_THREADS", "")
    if n.isdigit() and int(n) > 0 and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(n))
    tempfile.tempdir = None
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


# ---------------------------------------------------------------------------------------------------
# The client: a rule script's process
# ---------------------------------------------------------------------------------------------------
def delegate(script: str | None = None) -> None:
    """Run this process's script in the worker, if there is one for it, and exit with the job's status.
    Returns (and the script goes on here) when there is none or it refuses this Python environment."""
    path = os.environ.get(SOCKET_ENV)
    if script is None:
        script = getattr(sys.modules.get("__main__"), "__real_file__", None)  # Snakemake's generated script
    if not path or not script or os.environ.get(_INSIDE_ENV):
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        return  # no worker (it ended, or never started): run here
    req = {"script": os.path.abspath(script), "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
           "path": sys.path, "prefix": sys.prefix, "executable": sys.executable}
    payload = json.dumps(req).encode()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
    conn.sendall(payload)
    reply = bytearray()
    while chunk := conn.recv(64):
        reply += chunk
    conn.close()
    if reply == _REFUSED:
        return
    if not reply:
        print(f"opdpipe: the resident worker at {path} ended before this job did", file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(int(reply))


def start(log_file: str) -> str:
    """Start a worker for this (Snakemake) process, its lines in `log_file`; its socket's path, also set
    in this process's environment (SOCKET_ENV) for the jobs it starts."""
    import subprocess
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="opdpipe-worker-"), "socket")  # short: a socket path has <108 bytes
    os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
    with open(log_file, "a") as log:
        subprocess.Popen([sys.executable, "-m", "opdpipe.worker", path, str(os.getpid())], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True)  # Ctrl-C reaches the jobs, not the worker
    os.environ[SOCKET_ENV] = path
    return path


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
