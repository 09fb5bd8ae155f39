"""Packaging: Dockerfile, docker-compose.yml and .dockerignore, checked without a Docker engine
(none runs here). docker-compose validates the compose file; static checks read the Dockerfile's
stages; and what the containers would run is run here for real, container paths mapped to
temporary ones: the compose job's `lsr collection` script on a SciFact subset, then `lsr serve`
with the image's flags, asked /readyz by the image's own HEALTHCHECK command."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
BIN = Path(sys.executable).parent  # the venv's lsr next to its python


# -- reading the files --------------------------------------------------------------------------
def dockerfile_stages(path: Path = REPO / "Dockerfile") -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per stage; comments dropped, continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK CMD arguments as a list (JSON exec form or shell form)."""
    return json.loads(args) if args.startswith("[") else ["sh", "-c", args]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions(stage, "ENV"):
        for item in shlex.split(args):
            name, sep, value = item.partition("=")
            assert sep, f"ENV {args!r}: use the NAME=value form"
            env[name] = value
    return env


def dockerignore_excludes(rel: str, patterns: list[str] | None = None) -> bool:
    """Whether the build context leaves ``rel`` out: the last pattern matching the path or one of
    its parent folders wins, ``!`` re-includes (Docker's rules, glob subset: *, ?, **)."""
    if patterns is None:
        text = (REPO / ".dockerignore").read_text()
        patterns = [p.strip() for p in text.splitlines() if p.strip() and not p.startswith("#")]
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def job_and_service() -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(job name, job, service name, service): the service runs `lsr serve`, after the job."""
    services = compose()["services"]
    serving = [n for n, s in services.items() if s.get("command", [])[:2] == ["lsr", "serve"]]
    assert len(serving) == 1, f"one compose service should run lsr serve, found {serving}"
    name = serving[0]
    service = services[name]
    depends = service.get("depends_on") or {}
    jobs = [
        n
        for n, d in depends.items()
        if isinstance(d, dict) and d.get("condition") == "service_completed_successfully"
    ]
    assert len(jobs) == 1, "lsr serve should wait for one job (service_completed_successfully)"
    return jobs[0], services[jobs[0]], name, service


def job_script(job: dict[str, Any]) -> str:
    command = job["command"]
    assert isinstance(command, list) and command[0] == "sh" and command[1].startswith("-")
    assert "e" in command[1], "the job's shell should stop at the first failing command (-e)"
    return command[2]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def data_dir_of(service: dict[str, Any]) -> str:
    """Where `lsr serve` looks: --data-dir, else LSR_DATA_DIR from compose, else the image's."""
    runtime_env = env_of(dockerfile_stages()[-1])
    return (
        option(service["command"], "--data-dir")
        or (service.get("environment") or {}).get("LSR_DATA_DIR")
        or runtime_env["LSR_DATA_DIR"]
    )


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (source, mode) for short-syntax volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


# -- docker-compose -----------------------------------------------------------------------------
def test_compose_file_is_valid() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip(
            "docker-compose is not installed (Debian: apt-get install docker-compose; "
            ".ci/run installs it when it runs as root)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [tool, "-f", "docker-compose.yml", "config", "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_service_and_job_share_the_data_volume() -> None:
    document = compose()
    job_name, job, _, service = job_and_service()
    data_dir = data_dir_of(service)
    assert data_dir == env_of(dockerfile_stages()[-1])["LSR_DATA_DIR"], "image and compose differ"
    service_mounts, job_mounts = mounts(service), mounts(job)
    assert data_dir in service_mounts and data_dir in job_mounts
    volume = service_mounts[data_dir][0]
    assert job_mounts[data_dir][0] == volume, "the job writes to another volume than lsr serve"
    assert volume in (document.get("volumes") or {}), f"{volume} is not a named volume"
    assert (job.get("environment") or {}).get("LSR_DATA_DIR", data_dir) == data_dir
    # ../shared: read-only, in the job (inputs) and the service (the collection's model)
    for mounted in (service_mounts, job_mounts):
        assert mounted["/shared"] == ("../shared", "ro")
    # the script builds aside and renames the result to a direct child of the data directory
    # (the service opens <data dir>/<name>/collection.json); its inputs exist under ../shared
    script = job_script(job)
    created = re.findall(r"lsr collection create (\S+)", script)
    assert created, f"{job_name} does not run lsr collection create"
    moved = re.findall(r"^\s*mv (\S+) (\S+)\s*$", script, re.M)
    assert moved and moved[-1][0] == created[0], "the built collection is not moved into place"
    final = Path(moved[-1][1])
    assert final.parent == Path(data_dir)
    assert f"[ -f {final}/collection.json ]" in script, "a second run would build again"
    for path in re.findall(r"(?<!\S)/shared/\S+", script):
        assert (SHARED / Path(path).relative_to("/shared")).exists(), path


def test_compose_service_port_and_healthcheck_match_the_image() -> None:
    _, _, _, service = job_and_service()
    runtime = dockerfile_stages()[-1]
    (cmd,) = instructions(runtime, "CMD")
    assert service["command"] == exec_form(cmd), "compose runs lsr serve differently from the image"
    port = option(service["command"], "--port")
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == [port]
    assert service["ports"][0].startswith("127.0.0.1:"), "publish on the host's loopback only"
    test = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in test
    assert "LSR_API_KEY" in service["environment"] and service["environment"]["LSR_API_KEY"] is None


# -- Dockerfile ---------------------------------------------------------------------------------
def test_dockerfile_builds_in_a_venv_and_runs_lsr_serve_as_a_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    builder, runtime = stages[0], stages[-1]
    assert re.fullmatch(r"\S+ AS builder", instructions(builder, "FROM")[0], re.I)
    builder_text = " ".join(args for _, args in builder)
    assert "python3 -m venv /opt/venv" in builder_text
    # torch from PyTorch's CPU index (an ARG), only for extras that need it; default extras
    args = dict(a.split("=", 1) for a in itertools.chain(*map(shlex.split, instructions(
        builder, "ARG"))) if "=" in a)  # fmt: skip
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert '--index-url "$TORCH_INDEX_URL" torch' in builder_text
    assert set(args["LSR_EXTRAS"].split(",")) == {"service", "encoders"}
    assert "PIP_CONSTRAINT=/src/constraints.txt" in " ".join(instructions(builder, "ENV"))
    # the runtime stage: the venv only, no installs, a non-root user owning its writable places
    assert "--from=builder /opt/venv /opt/venv" in instructions(runtime, "COPY")
    runtime_text = " ".join(args for _, args in runtime)
    assert "pip install" not in runtime_text
    users = instructions(runtime, "USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the runtime runs as root"
    assert "useradd" in runtime_text and users[-1] in runtime_text
    env = env_of(runtime)
    owned = re.findall(r"chown -R \S+ ([^&]+)", runtime_text)
    owned_dirs = [Path(p) for group in owned for p in group.split()]
    for place in (env["NUMBA_CACHE_DIR"], env["LSR_DATA_DIR"]):
        assert any(Path(place) == d or d in Path(place).parents for d in owned_dirs), place
    assert instructions(runtime, "VOLUME") == [env["LSR_DATA_DIR"]]
    assert "/opt/venv/bin" in env["PATH"].split(":")[0]
    # CMD: lsr serve on all interfaces, the EXPOSEd port; no ENTRYPOINT in the way
    assert not instructions(runtime, "ENTRYPOINT")
    (cmd,) = instructions(runtime, "CMD")
    argv = exec_form(cmd)
    assert argv[:2] == ["lsr", "serve"]
    assert option(argv, "--host") == "0.0.0.0"
    assert instructions(runtime, "EXPOSE") == [option(argv, "--port")]
    # HEALTHCHECK: /readyz with python's urllib (no curl in slim images)
    (health,) = instructions(runtime, "HEALTHCHECK")
    probe = exec_form(health.split(" CMD ", 1)[1])
    assert probe[0] == "python" and "urllib.request" in probe[-1]
    assert f"http://127.0.0.1:{option(argv, '--port')}/readyz" in probe[-1]


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    copied = []
    for stage in dockerfile_stages():
        for args in instructions(stage, "COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if "--from=" in args:
                continue
            copied += words[:-1]
    assert {"constraints.txt", "pyproject.toml", "README.md", "lsr", "service"} <= set(copied)
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not dockerignore_excludes(source), f"COPY {source}: .dockerignore leaves it out"
    for module in ("lsr/cli/serve_cmd.py", "lsr/collection/collection.py", "service/app.py"):
        assert not dockerignore_excludes(module), module


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".git", ".git/HEAD", ".venv", ".venv/bin/python", "data", "data/demo/wal",
                 "indexes", "runs", ".numba_cache", "eval/work", "build", ".pytest_cache",
                 "lsr/__pycache__/cli.cpython-311.pyc", "lsr/index/kernels/__pycache__/x.nbi",
                 "lsr.egg-info", ".env"):  # fmt: skip
        assert dockerignore_excludes(path), f".dockerignore lets {path} into the build context"


def test_dockerignore_matcher() -> None:
    assert dockerignore_excludes("a/b.pyc", ["**/*.pyc"])
    assert dockerignore_excludes("x/y", ["*"])
    assert not dockerignore_excludes("lsr/a.py", ["*", "!lsr"])
    assert dockerignore_excludes("lsr/__pycache__/a.pyc", ["*", "!lsr", "**/__pycache__"])
    assert not dockerignore_excludes("data", ["/data/x"])


# -- what the containers run, run here ----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """The compose job's script on 30 SciFact abstracts, then the compose service's command on
    its output: (base URL, port, data directory)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("torch")
    corpus = SHARED / "data" / "beir" / "scifact" / "corpus.jsonl.gz"
    if not corpus.is_file():
        pytest.skip(f"no SciFact corpus at {corpus}")
    _, job, _, service = job_and_service()
    data = tmp_path / "data"
    data.mkdir()
    subset = tmp_path / "corpus-30.jsonl.gz"
    with gzip.open(corpus, "rt") as src, gzip.open(subset, "wt") as dst:
        dst.writelines(itertools.islice(src, 30))
    container_corpus = "/shared/data/beir/scifact/corpus.jsonl.gz"
    script = job_script(job)
    assert container_corpus in script

    def local(match: re.Match[str]) -> str:
        path = match.group(0)
        if path == container_corpus:
            return str(subset)
        root, rest = (SHARED, path[len("/shared") :]) if path.startswith("/shared") else (
            data, path[len("/data") :])  # fmt: skip
        return f"{root}{rest}"

    script = re.sub(r"(?<![\w./-])/(?:shared|data)(?:/[^\s;]*)?", local, script)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.update({k: str(v) for k, v in (job.get("environment") or {}).items()})
    env["LSR_DATA_DIR"] = str(data)
    for attempt in ("build", "again"):
        result = subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        assert result.returncode == 0, f"{attempt}: {result.stdout}\n{result.stderr}"
    assert "already built" in result.stdout
    assert sorted(p.name for p in data.iterdir()) == ["scifact"]

    port = free_port()
    argv = list(service["command"])
    argv[argv.index("--port") + 1] = str(port)
    env.update({k: str(v) for k, v in service["environment"].items() if v is not None})
    env["LSR_DATA_DIR"] = str(data)
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", port, data
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.mark.slow
def test_compose_job_output_is_served_by_the_image_command(
    served: tuple[str, int, Path],
) -> None:
    base, port, _ = served
    (health,) = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    probe = exec_form(health.split(" CMD ", 1)[1])
    probe = [sys.executable, *probe[1:-1], probe[-1].replace(":8000/", f":{port}/")]
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0, "not up yet"
    deadline = time.monotonic() + 120
    while True:
        try:
            status, body = get_json(base + "/readyz")
            if status == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "lsr serve did not become ready in 120 s"
        time.sleep(0.3)
    assert body == {"status": "ready", "collections": ["scifact"]}
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    request = urllib.request.Request(
        base + "/collections/scifact/search",
        data=json.dumps({"query": "vitamin D and cancer", "limit": 3}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        hits = json.loads(response.read())["hits"]
    assert len(hits) == 3
    _, info = get_json(base + "/collections/scifact")
    assert info["live_docs"] == 30


# -- the image itself, where podman can build and run it -----------------------------------------
PODMAN_RUN = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network=host"]


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True,
                            text=True, timeout=timeout)  # fmt: skip
    assert not check or result.returncode == 0, f"podman {args[0]}: {result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_podman_builds_the_image_and_it_serves_the_job_output(tmp_path: Path) -> None:
    """Opt-in (LSR_TEST_PODMAN=1: minutes, needs podman, runc and debootstrap, as root). No
    registry is reachable, so the base is Debian 12 bootstrapped here (its python3 is 3.11);
    buildah's chroot isolation builds (crun refuses this host's hybrid cgroups), runc runs with
    ulimits lowered (no CAP_SYS_RESOURCE) on the host network."""
    if os.environ.get("LSR_TEST_PODMAN") != "1":
        pytest.skip("opt-in: LSR_TEST_PODMAN=1 builds the image with podman (minutes)")
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(missing) or 'podman'}")
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("port 8000 is taken (the container shares the host's network)")
    base = "localhost/lsr-base:bookworm"
    if podman("image", "exists", base, check=False).returncode != 0:
        root = tmp_path / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,"
                        "ca-certificates", "bookworm", str(root), "http://deb.debian.org/debian"],
                       check=True, capture_output=True, timeout=900)  # fmt: skip
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", base], stdin=tar.stdout, check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        assert tar.wait() == 0
    # pip inside the build: this machine's CA bundle (TLS proxies) and wheel folder (CPU torch)
    pip_conf, mounts_ = tmp_path / "pip.conf", []
    lines = ["[global]"]
    cert = Path("/etc/ssl/certs/ca-certificates.crt")
    if cert.is_file():
        lines.append(f"cert = {cert}")
        mounts_ += ["-v", f"{cert}:{cert}:ro"]
    wheels = os.environ.get("PIP_FIND_LINKS", "")
    if wheels and Path(wheels).is_dir():
        lines.append("find-links = /wheels")
        mounts_ += ["-v", f"{wheels}:/wheels:ro"]
    pip_conf.write_text("\n".join(lines) + "\n")
    image = "localhost/lsr:packaging-test"
    index = os.environ.get("LSR_TORCH_INDEX_URL", "https://pypi.org/simple")
    podman("build", "--format", "docker", "--isolation=chroot", "--build-arg",
           f"PYTHON_IMAGE={base}", "--build-arg", f"TORCH_INDEX_URL={index}", *mounts_,
           "-v", f"{pip_conf}:/etc/pip.conf:ro", "-t", image, str(REPO), timeout=1800)  # fmt: skip
    # the compose job's script on 30 abstracts, into a fresh named volume, as the image's user
    _, job, _, _ = job_and_service()
    subset = tmp_path / "scifact"
    subset.mkdir()
    corpus = SHARED / "data" / "beir" / "scifact" / "corpus.jsonl.gz"
    with gzip.open(corpus, "rt") as src, gzip.open(subset / "corpus.jsonl.gz", "wt") as dst:
        dst.writelines(itertools.islice(src, 30))
    volume, name = "lsr-packaging-test", "lsr-packaging-test"
    podman("rm", "-f", name, check=False)
    podman("volume", "rm", "-f", volume, check=False)
    shared = ["-v", f"{SHARED / 'models'}:/shared/models:ro", "-e", "HF_HUB_OFFLINE=1"]
    try:
        podman("run", "--rm", *PODMAN_RUN, "-v", f"{volume}:/data", *shared,
               "-v", f"{subset}:/shared/data/beir/scifact:ro", image, *job["command"])  # fmt: skip
        podman("run", "-d", "--name", name, *PODMAN_RUN, "-v", f"{volume}:/data", *shared, image)
        deadline = time.monotonic() + 180
        while True:
            try:
                status, body = get_json("http://127.0.0.1:8000/readyz")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            time.sleep(1)
        assert body == {"status": "ready", "collections": ["scifact"]}
        podman("healthcheck", "run", name)
        user = podman("exec", name, "id", "-u").stdout.strip()
        assert user != "0"
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)
