"""The resident worker (opdpipe.worker): a job forked from it behaves as the process it replaces.

Each test starts a real worker process on a Unix socket and real client processes, as the rule
scripts are run (a script whose `__real_file__` is set, as Snakemake's preamble sets it). The smoke
DAG's run through the worker is compared with a run without it in tests/test_workflow.py, and with
the SLURM run (no worker) in tests/test_cluster.py.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opdpipe import worker
from test_packaging import ROOT

CLIENT = """\
import sys; __real_file__ = __file__
import os
{before}
from opdpipe.worker import delegate
delegate()
print("pid", os.getpid(), "parent", os.getppid(), "cwd", os.getcwd(), "argv", *sys.argv[1:], flush=True)
print("env", os.environ.get("OPDPIPE_TEST_VALUE"), "threads", os.environ.get("OMP_NUM_THREADS"), flush=True)
print("to stderr", file=sys.stderr)
print("held", "torch" in sys.modules, "fractions" in sys.modules, flush=True)
import random, tempfile
from huggingface_hub import constants
print("tmp", tempfile.gettempdir(), "draw", random.random(), "offline", constants.HF_HUB_OFFLINE, flush=True)
{after}
"""


def _env(sock: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), worker.SOCKET_ENV: str(sock), **extra}


@pytest.fixture
def served(tmp_path):
    """A worker (preloading torch, as in a study) on a socket in tmp_path, this test process its parent."""
    sock = tmp_path / "w.sock"
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", f"from opdpipe.worker import serve; serve({str(sock)!r}, {os.getpid()}, "
                             "preload=('torch',), idle=('huggingface_hub.constants', 'fractions'), "
                             "poll=0.2)"], env=_env(sock), stdout=log, stderr=log)
    for _ in range(300):
        if ": imported " in (tmp_path / "worker.log").read_text():
            break
        time.sleep(0.1)
    yield sock, proc
    proc.terminate()
    proc.wait(10)


def _script(tmp_path: Path, before: str = "", after: str = "") -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "job.py"
    path.write_text(CLIENT.format(before=before, after=after))
    return path


def _fields(out: str) -> dict:
    words = out.split()
    return {k: words[i + 1] for i, k in enumerate(words)
            if k in ("pid", "parent", "cwd", "env", "threads", "tmp", "draw", "offline")}


def test_a_job_runs_in_a_child_of_the_worker_with_the_clients_streams_cwd_argv_env_and_status(served, tmp_path):
    sock, proc = served
    script, cwd = _script(tmp_path / "a", after="sys.exit(3)"), tmp_path / "here"
    cwd.mkdir()
    client = subprocess.Popen([sys.executable, str(script), "a", "b c"], cwd=cwd, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=_env(sock, OPDPIPE_TEST_VALUE="seen", OMP_NUM_THREADS="1",
                                                               TMPDIR=str(tmp_path)))
    out, err = client.communicate(timeout=60)
    got = _fields(out)
    again = _fields(subprocess.run([sys.executable, str(_script(tmp_path))], capture_output=True, text=True,
                                   env=_env(sock), timeout=60).stdout)
    assert got["tmp"] == str(tmp_path) and got["draw"] != again["draw"]  # TMPDIR read again; random reseeded
    assert got["offline"] == "True"  # huggingface_hub, imported by the worker, read the jobs' HF_HUB_OFFLINE=1
    assert client.returncode == 3, err
    assert int(got["parent"]) == proc.pid and int(got["pid"]) != client.pid  # forked by the worker
    assert got["cwd"] == str(cwd) and "argv a b c" in out and (got["env"], got["threads"]) == ("seen", "1")
    assert err.strip() == "to stderr" and "held True True" in out  # imported before and after the first job
    log = (tmp_path / "worker.log").read_text()
    assert f"job {got['pid']}: job.py in {cwd}" in log
    assert re.search(rf"job {got['pid']}: exit 3 after [\d.]+ s, cpu [\d.]+ s, max rss [1-9]\d* MB", log)


def test_a_failing_job_reports_its_traceback_and_status_1(served, tmp_path):
    sock, _ = served
    r = subprocess.run([sys.executable, str(_script(tmp_path, after="raise RuntimeError('job failed here')"))],
                       capture_output=True, text=True, env=_env(sock), timeout=60)
    assert r.returncode == 1 and "RuntimeError: job failed here" in r.stderr and "Traceback" in r.stderr


def test_a_job_with_no_worker_or_another_python_runs_in_its_own_process(served, tmp_path):
    sock, proc = served
    alone = subprocess.Popen([sys.executable, str(_script(tmp_path))], stdout=subprocess.PIPE, text=True,
                             env=_env(tmp_path / "no-such.sock"))
    assert int(_fields(alone.communicate(timeout=60)[0])["pid"]) == alone.pid
    other = subprocess.Popen([sys.executable, str(_script(tmp_path, before="sys.executable = '/other/env/python'"))],
                             stdout=subprocess.PIPE, text=True, env=_env(sock))  # a conda: job's Python, say
    assert int(_fields(other.communicate(timeout=60)[0])["pid"]) == other.pid and other.returncode == 0
    assert "refused /other/env/python" in (tmp_path / "worker.log").read_text()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def test_a_killed_client_takes_its_job_and_the_jobs_subprocesses_down(served, tmp_path):
    sock, _ = served
    after = ("open('job.pid', 'w').write(str(os.getpid()))\nimport subprocess, time\n"
             "p = subprocess.Popen(['sleep', '300']); open('sub.pid', 'w').write(str(p.pid))\ntime.sleep(300)")
    client = subprocess.Popen([sys.executable, str(_script(tmp_path, after=after))], cwd=tmp_path, env=_env(sock),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        if (tmp_path / "sub.pid").exists() and (tmp_path / "sub.pid").read_text():
            break
        time.sleep(0.1)
    job, sub = (int((tmp_path / f).read_text()) for f in ("job.pid", "sub.pid"))
    assert not _gone(job) and not _gone(sub)
    client.send_signal(signal.SIGKILL)  # as Snakemake cancels a job, or a user kills it
    client.wait(10)
    for _ in range(50):
        if _gone(job) and _gone(sub):
            break
        time.sleep(0.1)
    assert _gone(job) and _gone(sub)


def test_the_worker_ends_with_the_process_that_started_it(tmp_path):
    sock = tmp_path / "w.sock"
    starter = subprocess.run(["bash", "-c", f"{sys.executable} -c \"from opdpipe.worker import serve; "
                              f"serve('{sock}', $$, preload=(), idle=(), poll=0.2)\" & echo $!; sleep 1"],
                             capture_output=True, text=True, env=_env(sock), timeout=60)
    pid = int(starter.stdout.split()[0])
    for _ in range(100):
        if _gone(pid):
            break
        time.sleep(0.1)
    assert _gone(pid) and not sock.exists()


@pytest.mark.parametrize("value, platform, on", [(None, "linux", True), ("1", "linux", True), ("0", "linux", False),
                                                (None, "darwin", False), ("1", "win32", False)])
def test_the_switch(value, platform, on):
    assert worker.wanted({} if value is None else {worker.SWITCH_ENV: value}, platform) is on


def test_a_bad_switch_value_names_the_key_the_value_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"OPDPIPE_RESIDENT_WORKER='yes': allowed are 1 .* or 0"):
        worker.wanted({worker.SWITCH_ENV: "yes"})
