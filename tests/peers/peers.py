#!/usr/bin/env python3
"""Real, independently written peers for idsync's end-to-end tests and demo.

  install   Install the peers into .peers/ (git-ignored) from the pins in tests/peers/:
            .peers/venv  (scim2-server, scim2-tester from requirements.txt),
            .peers/node  (oidc-provider, @stoplight/prism-cli from package.json and
                          package-lock.json) and .peers/hoop-mock-spec.json (the hoop
                          gateway spec made servable by tests/peers/hoop-openapi/derive-mock-spec).
            Idempotent: does nothing when the pins have not changed since the last install.
  up        Start the peers on 127.0.0.1 and write a JSON state file describing them:
              oidc          oidc-provider with one client_credentials client (tests/peers/oidc-provider.mjs)
              scim          scim2-server, seeded from --directory through POST /v2/Bulk
              standin       the hoop gateway stand-in binary given by --standin (optional)
              prism_proxy   Prism validating proxy (--errors) in front of the stand-in
              prism_mock    plain Prism mock of the hoop spec (unless --no-prism-mock)
  down      Stop everything a state file lists (process groups, by PID). Idempotent.
  scim-check  Run the scim2-tester compliance checks against a SCIM server.

Python 3.11 standard library only. Exit status is nonzero, with a message on stderr,
whenever something cannot be installed or started: the tests that use the peers must
fail loudly, never skip.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS = Path(os.environ.get("IDSYNC_PEERS_DIR", ROOT / ".peers")).resolve()
VENV = PEERS / "venv"
NODE = PEERS / "node"
MOCK_SPEC = PEERS / "hoop-mock-spec.json"
STAMP = PEERS / "installed.json"
LOGS = PEERS / "logs"

REQUIREMENTS = HERE / "requirements.txt"
PACKAGE_JSON = HERE / "package.json"
PACKAGE_LOCK = HERE / "package-lock.json"
OIDC_SCRIPT = HERE / "oidc-provider.mjs"

# Fixed loopback ports of the demo (config/demo.toml points at these).
FIXED_PORTS = {
    "oidc": 47010,
    "scim": 47011,
    "standin": 47012,
    "prism_proxy": 47013,
    "prism_mock": 47014,
}
START_ORDER = ["oidc", "scim", "standin", "prism_proxy", "prism_mock"]

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


class PeerError(Exception):
    """A failure to report on stderr before exiting nonzero."""


def log(msg: str) -> None:
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def ms_since(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)


# --------------------------------------------------------------------------- install


def hoop_openapi_dir() -> Path:
    """The hoop spec and derive-mock-spec: the verbatim copy in tests/peers/hoop-openapi
    (see its README.txt for provenance), unless IDSYNC_HOOP_OPENAPI_DIR names another."""
    env = os.environ.get("IDSYNC_HOOP_OPENAPI_DIR")
    candidates = [Path(env)] if env else []
    candidates += [ROOT / "tests" / "peers" / "hoop-openapi"]
    for c in candidates:
        if (c / "derive-mock-spec").is_file() and (c / "openapiv3.json").is_file():
            return c
    raise PeerError(
        "cannot find the hoop OpenAPI spec and derive-mock-spec: looked in "
        + ", ".join(str(c) for c in candidates)
        + " (set IDSYNC_HOOP_OPENAPI_DIR to the folder holding openapiv3.json and derive-mock-spec)"
    )


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def wanted_stamp() -> dict:
    spec_dir = hoop_openapi_dir()
    return {
        "requirements.txt": file_digest(REQUIREMENTS),
        "package.json": file_digest(PACKAGE_JSON),
        "package-lock.json": file_digest(PACKAGE_LOCK),
        "openapiv3.json": file_digest(spec_dir / "openapiv3.json"),
        "derive-mock-spec": file_digest(spec_dir / "derive-mock-spec"),
    }


def installed_files() -> list[Path]:
    return [
        VENV / "bin" / "python",
        VENV / "bin" / "scim2-server",
        NODE / "node_modules" / "oidc-provider" / "package.json",
        NODE / "node_modules" / ".bin" / "prism",
        MOCK_SPEC,
    ]


def is_installed(stamp: dict) -> bool:
    try:
        current = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    return current.get("pins") == stamp and all(p.exists() for p in installed_files())


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_step(what: str, argv: list, cwd: Path | None = None, hint: str = "") -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-40:])
        raise PeerError(
            f"{what} failed (exit {proc.returncode}): {' '.join(str(a) for a in argv)}\n{tail}"
            + (f"\nhint: {hint}" if hint else "")
        )
    log(f"{what}: ok in {ms_since(t0)} ms")


def install(force: bool = False) -> None:
    stamp = wanted_stamp()
    if not force and is_installed(stamp):
        return
    with file_lock(PEERS / "install.lock"):
        if not force and is_installed(stamp):  # another process installed while we waited
            return
        t0 = time.monotonic()
        log(f"installing the test peers into {PEERS}")
        if sys.version_info < (3, 11):
            raise PeerError(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                raise PeerError(f"'{tool}' is not on PATH: Node.js 20 or newer with npm is needed")
        node_major = subprocess.run(
            ["node", "-p", "process.versions.node.split('.')[0]"], capture_output=True, text=True
        ).stdout.strip()
        if not node_major.isdigit() or int(node_major) < 20:
            raise PeerError(f"Node.js 20 or newer is needed, found {node_major or 'unknown'}")
        with contextlib.suppress(FileNotFoundError):
            STAMP.unlink()

        # The Python and the Node peers install side by side (two threads, each
        # mostly waiting on its package manager), then the spec is derived.
        errors: list[BaseException] = []

        def python_peers() -> None:
            if not (VENV / "bin" / "python").exists():
                if VENV.exists():
                    shutil.rmtree(VENV)
                run_step(
                    "python venv",
                    [sys.executable, "-m", "venv", VENV],
                    hint="on Debian install python3-venv (apt-get install -y python3-venv)",
                )
            run_step(
                "pip install -r tests/peers/requirements.txt",
                [VENV / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "--quiet", "-r", REQUIREMENTS],
            )
            run_step("scim2-server --help", [VENV / "bin" / "scim2-server", "--help"])
            run_step("scim2-tester import",
                     [VENV / "bin" / "python", "-c", "import scim2_tester, scim2_client.engines.httpx2"])

        def node_peers() -> None:
            NODE.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE_JSON, NODE / "package.json")
            if PACKAGE_LOCK.exists():
                shutil.copyfile(PACKAGE_LOCK, NODE / "package-lock.json")
                npm = ["npm", "ci"]
            else:
                npm = ["npm", "install"]
            run_step(" ".join(npm) + " (tests/peers/package.json)",
                     npm + ["--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE)
            run_step("oidc-provider import",
                     ["node", "--input-type=module", "-e", "await import('oidc-provider')"], cwd=NODE)
            run_step("prism --version", [NODE / "node_modules" / ".bin" / "prism", "--version"])

        def guarded(step) -> None:
            try:
                step()
            except BaseException as e:  # reported below, after both threads finish
                errors.append(e)

        threads = [threading.Thread(target=guarded, args=(f,)) for f in (python_peers, node_peers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise PeerError("\n".join(str(e) for e in errors))

        spec_dir = hoop_openapi_dir()
        tmp = MOCK_SPEC.with_suffix(".tmp")
        run_step(
            "derive-mock-spec",
            [sys.executable, spec_dir / "derive-mock-spec", spec_dir / "openapiv3.json", tmp],
        )
        os.replace(tmp, MOCK_SPEC)

        missing = [str(p) for p in installed_files() if not p.exists()]
        if missing:
            raise PeerError("install finished but these are missing: " + ", ".join(missing))
        STAMP.write_text(json.dumps({"pins": stamp, "installed_in_ms": ms_since(t0)}, indent=2))
        log(f"installed in {ms_since(t0)} ms")


# --------------------------------------------------------------------------- processes


def proc_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_ours(entry: dict) -> bool:
    started = proc_start_time(entry["pid"])
    return started is not None and started == entry.get("start_time")


def spawn(name: str, argv: list, log_path: Path, cwd: Path | None = None, env: dict | None = None) -> dict:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as logf:
        logf.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(str(a) for a in argv)}\n".encode())
        logf.flush()
        try:
            p = subprocess.Popen(
                [str(a) for a in argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: `down` kills the whole group
                close_fds=True,
            )
        except OSError as e:
            raise PeerError(f"cannot start {name}: {argv[0]}: {e}") from e
    return {"name": name, "pid": p.pid, "pgid": p.pid, "start_time": proc_start_time(p.pid),
            "log": str(log_path), "popen": p}


def stop(entries: list[dict], grace: float = 5.0) -> None:
    """SIGTERM each of our process groups, wait, then SIGKILL what is left."""
    live = [e for e in entries if is_ours(e)]
    for e in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(e["pgid"], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_ours(e) for e in live):
        for e in live:
            p = e.get("popen")
            if p is not None:
                p.poll()  # reap our own children
        time.sleep(0.05)
    for e in live:
        # The leader was ours when we started: sweep its whole group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(e["pgid"], signal.SIGKILL)
        p = e.get("popen")
        if p is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=2)


def log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http_get(url: str, timeout: float = 1.0, headers: dict | None = None) -> tuple[int, bytes]:
    """GET returning (status, body) for any HTTP answer; raises OSError if none came."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise OSError(str(e)) from e


def http_json(method: str, url: str, body: dict, timeout: float = 60.0) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/scim+json", "Accept": "application/scim+json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


# --------------------------------------------------------------------------- readiness


def probe(name: str, state: dict) -> bool:
    """True when the peer answers as it should once ready."""
    try:
        if name == "oidc":
            status, body = http_get(state["issuer"] + "/.well-known/openid-configuration")
            return status == 200 and json.loads(body).get("issuer") == state["issuer"]
        if name == "scim":
            status, _ = http_get(state["scim_url"] + "/ServiceProviderConfig")
            return status == 200
        if name == "standin":
            # Any HTTP answer means it is serving (401 without a key is fine).
            http_get(state["standin_url"] + "/users",
                     headers={"Authorization": f"Bearer {state['standin_api_key']}"})
            return True
        if name == "prism_proxy":
            # Prism answers only once the spec is loaded; any answer will do. The key
            # keeps the stand-in from answering 401, which the spec does not list.
            http_get(state["prism_proxy_url"] + "/serverinfo",
                     headers={"Authorization": f"Bearer {state['standin_api_key']}"})
            return True
        if name == "prism_mock":
            status, _ = http_get(state["prism_mock_url"] + "/serverinfo")
            return status < 500
    except OSError:
        return False
    except ValueError:
        return False
    return False


# --------------------------------------------------------------------------- seeding


def scim_bulk(scim_url: str, ops: list[dict], max_ops: int, max_bytes: int) -> list[dict]:
    """POST the operations in chunks of at most max_ops operations / max_bytes; return the results."""
    results: list[dict] = []
    chunk: list[dict] = []
    size = 200

    def flush() -> None:
        nonlocal chunk, size
        if not chunk:
            return
        status, body = http_json("POST", scim_url + "/Bulk",
                                 {"schemas": [BULK_REQUEST], "Operations": chunk})
        if status != 200:
            raise PeerError(f"scim2-server refused a Bulk request of {len(chunk)} operations: "
                            f"HTTP {status} {json.dumps(body)[:2000]}")
        answered = body.get("Operations", [])
        if len(answered) != len(chunk):
            raise PeerError(f"scim2-server answered {len(answered)} of {len(chunk)} Bulk operations")
        results.extend(answered)
        chunk, size = [], 200

    for op in ops:
        op_size = len(json.dumps(op)) + 2
        if chunk and (len(chunk) >= max_ops or size + op_size > max_bytes):
            flush()
        chunk.append(op)
        size += op_size
    flush()
    return results


def seed_directory(scim_url: str, directory: dict) -> dict:
    """Create the directory's users, then its groups with member ids rewritten to the server's ids.

    Returns {"users": n, "groups": m, "ids": {file id: server id}}.
    """
    status, body = http_get(scim_url + "/ServiceProviderConfig", timeout=10)
    bulk = json.loads(body).get("bulk", {}) if status == 200 else {}
    if not bulk.get("supported"):
        raise PeerError("scim2-server does not announce Bulk support")
    max_ops = min(1000, int(bulk.get("maxOperations") or 1000))
    max_bytes = int(int(bulk.get("maxPayloadSize") or 1048576) * 0.9)

    users = directory.get("users", [])
    groups = directory.get("groups", [])
    if not isinstance(users, list) or not isinstance(groups, list):
        raise PeerError('the directory file must be {"users": [...], "groups": [...]}')

    ids: dict[str, str] = {}

    def post_all(kind: str, resources: list[dict], schema: str, prepare) -> None:
        ops, file_ids = [], []
        for i, res in enumerate(resources):
            if not isinstance(res, dict):
                raise PeerError(f"{kind}[{i}] is not a JSON object")
            data = prepare({k: v for k, v in res.items() if k not in ("id", "meta")}, i)
            data.setdefault("schemas", [schema])
            ops.append({"method": "POST", "path": "/" + kind, "bulkId": f"{kind[0].lower()}{i}", "data": data})
            file_ids.append(res.get("id"))
        results = scim_bulk(scim_url, ops, max_ops, max_bytes)
        failures = []
        for i, (res, file_id) in enumerate(zip(results, file_ids)):
            if str(res.get("status")) != "201":
                failures.append(f"{kind}[{i}] ({resources[i].get('userName') or resources[i].get('displayName')}): "
                                f"{res.get('status')} {json.dumps(res.get('response'))[:300]}")
                continue
            server_id = res.get("location", "").rstrip("/").rsplit("/", 1)[-1]
            if file_id is not None:
                if str(file_id) in ids:
                    failures.append(f"{kind}[{i}]: duplicate id {file_id!r} in the directory file")
                ids[str(file_id)] = server_id
        if failures:
            raise PeerError(f"scim2-server refused {len(failures)} of {len(resources)} {kind}:\n  "
                            + "\n  ".join(failures[:20]))

    def prepare_user(data: dict, i: int) -> dict:
        data.pop("groups", None)  # read-only in SCIM: membership lives in Group.members
        return data

    def prepare_group(data: dict, i: int) -> dict:
        members = []
        for m in data.get("members") or []:
            value = str(m.get("value")) if isinstance(m, dict) else str(m)
            if value not in ids:
                raise PeerError(f"groups[{i}] ({data.get('displayName')}): member {value!r} is no user id of the file")
            member = {"value": ids[value]}
            if isinstance(m, dict):
                member.update({k: m[k] for k in ("display", "type") if k in m})
            members.append(member)
        if "members" in data:
            data["members"] = members
        return data

    post_all("Users", users, USER_SCHEMA, prepare_user)
    post_all("Groups", groups, GROUP_SCHEMA, prepare_group)
    return {"users": len(users), "groups": len(groups), "ids": ids}


# --------------------------------------------------------------------------- up / down


def write_state(path: Path, state: dict, entries: list[dict]) -> None:
    state = dict(state)
    state["processes"] = [{k: v for k, v in e.items() if k != "popen"} for e in entries]
    state["pids"] = {e["name"]: e["pid"] for e in entries}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def prune_old_logs(max_age_s: float = 24 * 3600, keep: int = 60) -> None:
    """Drop the log folders of runs older than a day, and all but the newest `keep`."""
    if not LOGS.is_dir():
        return
    now = time.time()
    runs = []
    for d in LOGS.glob("run-*"):
        with contextlib.suppress(OSError):
            if d.is_dir():
                runs.append((d.stat().st_mtime, d))
    runs.sort(reverse=True)
    for i, (mtime, d) in enumerate(runs):
        if i >= keep or now - mtime > max_age_s:
            shutil.rmtree(d, ignore_errors=True)


def cmd_up(args: argparse.Namespace) -> int:
    t_all = time.monotonic()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    timings: dict[str, int] = {}

    t0 = time.monotonic()
    install()
    timings["install_check"] = ms_since(t0)

    directory = {"users": [], "groups": []}
    if args.directory:
        try:
            directory = json.loads(Path(args.directory).read_text())
        except (OSError, ValueError) as e:
            raise PeerError(f"cannot read the directory file {args.directory}: {e}") from e

    standin = None
    if args.standin:
        standin = Path(args.standin).resolve()
        if not os.access(standin, os.X_OK):
            raise PeerError(f"the stand-in binary {standin} does not exist or is not executable "
                            "(build it with: cargo build --example hoop_standin)")

    names = ["oidc", "scim"]
    if standin:
        names += ["standin", "prism_proxy"]
    if not args.no_prism_mock:
        names.append("prism_mock")

    if args.fixed_ports:
        ports = {n: FIXED_PORTS[n] for n in names}
        busy = [f"{n} {p}" for n, p in ports.items() if not port_is_free(p)]
        if busy:
            raise PeerError("fixed ports in use: " + ", ".join(busy)
                            + " (is a previous run still up? stop it with: peers.py down STATE.json)")
        log_dir = Path(args.log_dir).resolve() if args.log_dir else LOGS
    else:
        ports = {}
        for n in names:
            p = free_port()
            while p in ports.values():
                p = free_port()
            ports[n] = p
        prune_old_logs()
        log_dir = (Path(args.log_dir).resolve() if args.log_dir
                   else LOGS / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    log_dir.mkdir(parents=True, exist_ok=True)

    client_secret = args.client_secret or secrets.token_urlsafe(24)
    api_key = args.api_key or ("hpk_" + secrets.token_hex(16))
    state: dict = {
        "version": 1,
        "ready": False,
        "root": str(ROOT),
        "log_dir": str(log_dir),
        "logs": {n: str(log_dir / f"{n.replace('_', '-')}.log") for n in names},
        "client_id": args.client_id,
        "client_secret": client_secret,
        "scopes": args.scope.split(),
        "standin_api_key": api_key if standin else None,
        "mock_spec": str(MOCK_SPEC),
    }

    def set_urls() -> None:
        state["ports"] = dict(ports)
        state["issuer"] = f"http://127.0.0.1:{ports['oidc']}"
        state["token_endpoint"] = f"http://127.0.0.1:{ports['oidc']}/token"
        state["scim_url"] = f"http://127.0.0.1:{ports['scim']}/v2"
        state["standin_url"] = f"http://127.0.0.1:{ports['standin']}/api" if standin else None
        state["prism_proxy_url"] = f"http://127.0.0.1:{ports['prism_proxy']}/api" if standin else None
        state["prism_mock_url"] = f"http://127.0.0.1:{ports['prism_mock']}/api" if "prism_mock" in names else None

    node_bin = NODE / "node_modules" / ".bin"

    def command(n: str) -> tuple[list, Path | None]:
        if n == "oidc":
            return (["node", OIDC_SCRIPT, "--host", "127.0.0.1", "--port", ports["oidc"],
                     "--client-id", args.client_id, "--client-secret", client_secret,
                     "--scope", args.scope, "--auth-method", "client_secret_basic"], NODE)
        if n == "scim":
            return ([VENV / "bin" / "scim2-server", "--hostname", "127.0.0.1", "--port", ports["scim"]], None)
        if n == "standin":
            return ([standin, "--listen", f"127.0.0.1:{ports['standin']}", "--api-key", api_key], None)
        if n == "prism_proxy":
            return ([node_bin / "prism", "proxy", "--errors", "-h", "127.0.0.1", "-p", ports["prism_proxy"],
                     MOCK_SPEC, f"http://127.0.0.1:{ports['standin']}"], NODE)
        return ([node_bin / "prism", "mock", "-h", "127.0.0.1", "-p", ports["prism_mock"], MOCK_SPEC], NODE)

    entries: dict[str, dict] = {}

    def start(n: str) -> None:
        argv, cwd = command(n)
        entries[n] = spawn(n, argv, Path(state["logs"][n]), cwd=cwd)

    try:
        set_urls()
        t_start = time.monotonic()
        for n in names:
            start(n)
        write_state(out, state, list(entries.values()))  # so that `down` can clean up if we die now

        pending = set(names)
        seeded = False
        port_retries = 0
        deadline = time.monotonic() + args.timeout
        while pending or not seeded:
            for n in sorted(pending):
                e = entries[n]
                if e["popen"].poll() is None:
                    continue
                lost_port = any(m in log_tail(e["log"], 10).lower()
                                for m in ("address already in use", "eaddrinuse"))
                if lost_port and not args.fixed_ports and port_retries < 5:
                    # Another process took the free port between our probe and the
                    # peer's bind: start it again on a new one.
                    port_retries += 1
                    again = [n] + (["prism_proxy"] if n == "standin" and "prism_proxy" in names else [])
                    log(f"{n}: port {ports[n]} was taken meanwhile; starting it again on another")
                    stop([entries[a] for a in again])
                    ports[n] = free_port()
                    set_urls()
                    for a in again:
                        start(a)
                        pending.add(a)
                    write_state(out, state, list(entries.values()))
                    continue
                raise PeerError(f"{n} exited with status {e['popen'].returncode} before it was ready; "
                                f"log {e['log']}:\n{log_tail(e['log'])}")
            for n in sorted(pending):
                if entries[n]["popen"].poll() is None and probe(n, state):
                    pending.discard(n)
                    timings[n] = ms_since(t_start)
            if not seeded and "scim" not in pending:
                t0 = time.monotonic()
                seed = seed_directory(state["scim_url"], directory)
                state["scim_users"], state["scim_groups"], state["scim_ids"] = seed["users"], seed["groups"], seed["ids"]
                timings["scim_seed"] = ms_since(t0)
                seeded = True
                continue
            if not pending and seeded:
                break
            if time.monotonic() > deadline:
                late = sorted(pending) or ["scim (seeding)"]
                tails = "\n".join(f"--- {n}: {state['logs'].get(n)}\n{log_tail(state['logs'].get(n, ''))}"
                                  for n in late)
                raise PeerError(f"not ready within {args.timeout:g} s: {', '.join(late)}\n{tails}")
            time.sleep(0.05)

        if args.watch_pid:
            watcher = spawn("watchdog", [sys.executable, Path(__file__).resolve(), "_watch", out,
                                         str(args.watch_pid), str(proc_start_time(args.watch_pid) or 0)],
                            log_dir / "watchdog.log")
            entries = {"watchdog": watcher, **entries}

        timings["total"] = ms_since(t_all)
        state["timings_ms"] = timings
        state["ready"] = True
        write_state(out, state, list(entries.values()))
    except BaseException:
        stop(list(entries.values()))
        raise

    for n in names:
        url = {"oidc": state["issuer"], "scim": state["scim_url"], "standin": state["standin_url"],
               "prism_proxy": state["prism_proxy_url"], "prism_mock": state["prism_mock_url"]}[n]
        print(f"{n:12} {url:38} ready in {timings[n]:5d} ms   log {state['logs'][n]}")
    print(f"scim seeded with {state['scim_users']} users and {state['scim_groups']} groups "
          f"in {timings['scim_seed']} ms; all up in {timings['total']} ms; state in {out}")
    return 0


def load_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise PeerError(f"{path} is not a peers state file: {e}") from e


def cmd_down(args: argparse.Namespace) -> int:
    path = Path(args.state)
    state = load_state(path)
    if state is None:
        log(f"{path} does not exist: nothing to stop")
        return 0
    entries = state.get("processes", [])
    me = os.getpid()
    stop([e for e in entries if e["pid"] != me])
    left = [f"{e['name']} ({e['pid']})" for e in entries if e["pid"] != me and is_ours(e)]
    if left:
        raise PeerError("still running after SIGKILL: " + ", ".join(left))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Internal: stop the peers of STATE once process PID (the test run that started them) is gone."""
    watched = {"pid": args.pid, "start_time": args.start_time}
    path = Path(args.state)
    while True:
        if not path.exists():
            return 0
        if not (is_ours(watched) if args.start_time else proc_start_time(args.pid) is not None):
            break
        time.sleep(0.5)
    log(f"process {args.pid} is gone: stopping the peers of {path}")
    return cmd_down(argparse.Namespace(state=str(path)))


def cmd_scim_check(args: argparse.Namespace) -> int:
    """Run scim2-tester (in the venv) against a SCIM server; nonzero if any check errors."""
    install()
    code = r"""
import sys, json
import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server, Status
url, token, tags = sys.argv[1], sys.argv[2], sys.argv[3]
headers = {"Authorization": "Bearer " + token} if token else {}
client = SyncSCIMClient(httpx2.Client(base_url=url, headers=headers))
kw = {"include_tags": set(tags.split(","))} if tags else {}
results = check_server(client, **kw)
bad = 0
for r in results:
    st = r.status.name
    if st in ("ERROR", "CRITICAL"):
        bad += 1
    print(f"{st:12} {r.title}" + (f": {r.reason}" if r.reason and st not in ("SUCCESS",) else ""))
print(f"scim2-tester: {len(results)} checks, {bad} with errors")
sys.exit(1 if bad else 0)
"""
    return subprocess.run([str(VENV / "bin" / "python"), "-c", code, args.url, args.token or "", args.tags or ""]).returncode


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="peers.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="{install,up,down,scim-check}")

    p = sub.add_parser("install", help="install the peers into .peers/ (idempotent)")
    p.add_argument("--force", action="store_true", help="reinstall even if the pins have not changed")

    p = sub.add_parser("up", help="start the peers and write a state file")
    p.add_argument("--out", required=True, help="state file to write (JSON)")
    p.add_argument("--directory", help='directory to seed scim2-server with: {"users": [...], "groups": [...]}')
    p.add_argument("--client-id", default="idsync")
    p.add_argument("--client-secret", help="the OIDC client's secret (random if not given)")
    p.add_argument("--scope", default="scim.read", help="space-separated scopes the client may ask for")
    p.add_argument("--standin", help="path of the hoop_standin binary; also starts the Prism validating proxy")
    p.add_argument("--api-key", help="the stand-in's API key (random hpk_... if not given)")
    p.add_argument("--fixed-ports", action="store_true",
                   help="use the demo's fixed ports " + ", ".join(f"{n} {p}" for n, p in FIXED_PORTS.items()))
    p.add_argument("--no-prism-mock", action="store_true", help="do not start the plain Prism mock")
    p.add_argument("--watch-pid", type=int, help="stop the peers when this process exits (e.g. the test run)")
    p.add_argument("--log-dir", help="where to write the peers' logs (default .peers/logs/...)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for all peers to be ready")

    p = sub.add_parser("down", help="stop the peers of a state file (idempotent)")
    p.add_argument("state")

    p = sub.add_parser("scim-check", help="run the scim2-tester checks against a SCIM base URL")
    p.add_argument("url", help="e.g. http://127.0.0.1:PORT/v2")
    p.add_argument("--token", help="bearer token to send")
    p.add_argument("--tags", help="comma-separated scim2-tester tags to include (default all)")

    p = sub.add_parser("_watch")
    p.add_argument("state")
    p.add_argument("pid", type=int)
    p.add_argument("start_time", type=int)

    args = parser.parse_args(argv)
    try:
        if args.cmd == "install":
            t0 = time.monotonic()
            install(force=args.force)
            log(f"peers installed ({PEERS}); checked in {ms_since(t0)} ms")
            return 0
        if args.cmd == "up":
            return cmd_up(args)
        if args.cmd == "down":
            return cmd_down(args)
        if args.cmd == "scim-check":
            return cmd_scim_check(args)
        if args.cmd == "_watch":
            return cmd_watch(args)
    except PeerError as e:
        print(f"peers.py {args.cmd}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"peers.py {args.cmd}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
