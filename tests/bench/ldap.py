#!/usr/bin/env python3
"""idsync LDAP benchmark (tests/bench/run --ldap): a real slapd with N users in G groups.

Loads the directory offline (slapadd) into a throwaway slapd on loopback, with the
syncprov overlay and a session log, and measures on this machine:

  1. floor          ldapsearch paging (1000 a page) the two searches a full read makes
                    (groups with cn, member, entryUUID; users with the user attributes)
                    to /dev/null
  2. full read      `idsync --sync-now`, source.incremental = false, against an
                    unchanged directory already synced (the instant gateway stand-in
                    gets no write): wall / floor, target <= 1.2
  3. incremental    source.incremental = true: a cold run (refresh without a cookie),
                    then 100 users renamed with ldapmodify, then one run: its wall /
                    the full read's wall, target <= 2 %, and its gateway writes (must be
                    exactly the 100 updates)
  4. peak RSS       ru_maxrss of every idsync child at this size, target <= 64 MiB
  5. daemon         the same change reads made by idsync as a daemon (a run every 2 s,
                    the process and its cache already open): each run's duration_ms
                    after 100 more renames, from its log
  6. writes floor   update_floor: a plain reqwest client making the same 100 updates
                    (a GET and a PUT each, 16 in flight, as idsync's config says) to
                    the same gateway stand-in, connections already open: rounds back
                    to back, and rounds 2 s apart as the daemon's runs are

idsync's wall, CPU and peak RSS come from the kernel's rusage of the child
(os.wait4). Prints one table; raw figures go to target/bench/ldap.json.

Usage: tests/bench/ldap.py [--users 100000] [--groups 1000] [--reps 3] [--no-build]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import re
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(ROOT, "target", "bench")
IDSYNC = os.path.join(ROOT, "target", "release", "idsync")
GATEWAY = os.path.join(ROOT, "target", "release", "examples", "bench_gateway")
UPDATE_FLOOR = os.path.join(ROOT, "target", "release", "examples", "update_floor")
SUFFIX = "dc=example,dc=com"
PEOPLE = "ou=people," + SUFFIX
GROUPS = "ou=groups," + SUFFIX
SYNC_DN, SYNC_PW = "cn=sync," + SUFFIX, "sync-secret"
ADMIN_DN, ADMIN_PW = "cn=admin," + SUFFIX, "admin-secret"
PAGE = 1000
CHANGES = 100
USER_ATTRS = ["entryUUID", "mail", "displayName", "cn", "givenName", "sn", "uid"]
GROUP_ATTRS = ["cn", "member", "entryUUID"]
TARGETS = {"full_over_floor": 1.2, "incremental_over_full": 0.02, "rss_mib": 64}
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(message):
    print(f"[bench-ldap {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def env():
    clean = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    clean.pop("RUST_LOG", None)
    return clean


def ldif(users, groups):
    """Users in `groups` groups: the first tenth are departments, each nesting
    nine leaf groups; every user is in one leaf group (so in its department too)."""
    departments = max(1, groups // 10)
    leaves = groups - departments
    yield f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n"
    for ou in ("people", "groups"):
        yield f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n"
    yield f"dn: {SYNC_DN}\nobjectClass: person\ncn: sync\nsn: sync\nuserPassword: {SYNC_PW}\n"
    for i in range(users):
        yield (f"dn: uid=u{i:07},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: u{i:07}\ncn: User {i}\n"
               f"sn: User\ngivenName: Number {i}\ndisplayName: User {i}\nmail: u{i:07}@example.com\n")
    for g in range(leaves):
        members = "".join(f"member: uid=u{i:07},{PEOPLE}\n" for i in range(g, users, leaves))
        yield f"dn: cn=team-{g:04},{GROUPS}\nobjectClass: groupOfNames\ncn: team-{g:04}\n{members or 'member: ' + ADMIN_DN + chr(10)}"
    for d in range(departments):
        nested = "".join(f"member: cn=team-{g:04},{GROUPS}\n" for g in range(d, leaves, departments))
        yield f"dn: cn=dept-{d:03},{GROUPS}\nobjectClass: groupOfNames\ncn: dept-{d:03}\n{nested}"


def slapd_config(dir):
    return f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
pidfile {dir}/slapd.pid
sizelimit size.soft=500 size.hard=500 size.pr=500 size.prtotal=unlimited
database mdb
maxsize 4294967296
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PW}
directory {dir}/db
index objectClass eq
index entryCSN,entryUUID eq
limits dn.exact="{SYNC_DN}" size=unlimited size.pr=unlimited
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
overlay syncprov
syncprov-sessionlog 10000
"""


def measure(argv, name, allowed=(0,)):
    out = os.path.join(OUT_DIR, "logs", f"ldap-{name}.out")
    err = os.path.join(OUT_DIR, "logs", f"ldap-{name}.err")
    with open(out, "w") as o, open(err, "w") as e:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=o, stderr=e, env=env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in allowed:
        raise RuntimeError(f"{name}: {argv[0]} exited {code}; see {err}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss, "exit": code}


def config(path, url, gateway, cache, incremental, schedule=None):
    every = f'schedule = "{schedule}"\n' if schedule else ""
    with open(path, "w") as f:
        f.write(f"""[source]
kind = "ldap"
url = "{url}"
page_size = {PAGE}
incremental = {str(incremental).lower()}
[source.ldap]
bind_dn = "{SYNC_DN}"
bind_password_file = "{os.path.dirname(path)}/password"
user_base = "{PEOPLE}"
group_base = "{GROUPS}"
[target]
url = "{gateway}"
api_key = "bench"
rate_limit_per_second = 1000000
burst = 1000
max_in_flight = 16
[sync]
update_existing = true
{every}[cache]
path = "{cache}"
""")


def gateway_stats(root):
    with OPENER.open(root + "/_bench/stats", timeout=30) as r:
        return json.loads(r.read())


def reset(root):
    OPENER.open(urllib.request.Request(root + "/_bench/reset", method="POST"), timeout=30).read()


def floor(url):
    search = ["ldapsearch", "-x", "-LLL", "-H", url, "-D", SYNC_DN, "-w", SYNC_PW, "-E", f"pr={PAGE}/noprompt"]
    started = time.perf_counter()
    for base, filter, attrs in ((GROUPS, "(objectClass=groupOfNames)", GROUP_ATTRS),
                                (PEOPLE, "(objectClass=inetOrgPerson)", USER_ATTRS)):
        subprocess.run(search + ["-b", base, filter, *attrs], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    os.makedirs(os.path.join(OUT_DIR, "logs"), exist_ok=True)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--example", "bench_gateway", "--example", "update_floor"],
                       cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release", "--bin", "idsync"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="idsync-bench-ldap-")
    procs = []
    try:
        results = run(args, work, procs)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(OUT_DIR, "ldap.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(table(results))


def start_slapd(args, work, procs):
    os.makedirs(os.path.join(work, "db"))
    with open(os.path.join(work, "slapd.conf"), "w") as f:
        f.write(slapd_config(work))
    with open(os.path.join(work, "data.ldif"), "w") as f:
        f.writelines(entry + "\n" for entry in ldif(args.users, args.groups))
    log(f"slapadd: {args.users} users, {args.groups} groups")
    started = time.perf_counter()
    subprocess.run(["/usr/sbin/slapadd", "-q", "-w", "-f", f"{work}/slapd.conf", "-l", f"{work}/data.ldif"],
                   check=True, stdout=subprocess.DEVNULL)
    load_s = time.perf_counter() - started
    port = free_port()
    url = f"ldap://127.0.0.1:{port}"
    procs.append(subprocess.Popen(["/usr/sbin/slapd", "-d", "0", "-h", url + "/", "-f", f"{work}/slapd.conf"],
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "slapd.log"), "w")))
    for _ in range(200):
        if subprocess.run(["ldapwhoami", "-x", "-H", url, "-D", SYNC_DN, "-w", SYNC_PW],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            break
        time.sleep(0.05)
    return url, load_s


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, work, procs):
    url, load_s = start_slapd(args, work, procs)
    gw = subprocess.Popen([GATEWAY, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True, env=env())
    procs.append(gw)
    gateway = gw.stdout.readline().split()[2]
    root = gateway.rsplit("/api", 1)[0]
    with open(os.path.join(work, "password"), "w") as f:
        f.write(SYNC_PW)
    results = {"users": args.users, "groups": args.groups, "page_size": PAGE, "slapadd_s": load_s,
               "targets": TARGETS, "runs": {}}
    floors = [floor(url) for _ in range(args.reps)]
    results["floor_s"] = statistics.median(floors)
    log(f"floor: {results['floor_s']:.2f} s")

    full_cfg, inc_cfg = os.path.join(work, "full.toml"), os.path.join(work, "incremental.toml")
    config(full_cfg, url, gateway, os.path.join(work, "cache-full"), False)
    config(inc_cfg, url, gateway, os.path.join(work, "cache-inc"), True)
    runs = results["runs"]
    runs["full_cold"] = measure([IDSYNC, "--config", full_cfg, "--sync-now"], "full-cold")
    steady = []
    for rep in range(args.reps):
        reset(root)
        steady.append(measure([IDSYNC, "--config", full_cfg, "--sync-now"], f"full-steady-{rep}"))
        steady[-1]["gateway"] = gateway_stats(root)
    runs["full_steady"] = steady
    results["full_wall_s"] = statistics.median(r["wall_s"] for r in steady)
    log(f"full read: {results['full_wall_s']:.2f} s")

    runs["incremental_cold"] = measure([IDSYNC, "--config", inc_cfg, "--sync-now"], "inc-cold")
    # The first run after a cold one pays for the cache the cold run left (for
    # every source): measured apart, with nothing changed.
    reset(root)
    runs["incremental_unchanged"] = measure([IDSYNC, "--config", inc_cfg, "--sync-now"], "inc-unchanged")
    runs["incremental_unchanged"]["gateway"] = gateway_stats(root)
    incremental = []
    for rep in range(args.reps):
        rename(url, rep)
        reset(root)
        incremental.append(measure([IDSYNC, "--config", inc_cfg, "--sync-now"], f"inc-{rep}"))
        incremental[-1]["gateway"] = gateway_stats(root)
    runs["incremental"] = incremental
    results["incremental_wall_s"] = statistics.median(r["wall_s"] for r in incremental)
    daemon_cfg = os.path.join(work, "daemon.toml")
    config(daemon_cfg, url, gateway, os.path.join(work, "cache-inc"), True, schedule="*/2 * * * * *")
    # Three times as many: a daemon's run takes milliseconds, and its median wants more of them.
    runs["daemon_ms"] = daemon_runs(daemon_cfg, url, range(args.reps, 4 * args.reps))
    results["daemon_run_s"] = statistics.median(runs["daemon_ms"]) / 1000
    runs["writes_floor_ms"] = writes_floor(gateway, 2 * args.reps + 1)
    results["writes_floor_s"] = statistics.median(runs["writes_floor_ms"]) / 1000
    runs["writes_floor_idle_ms"] = writes_floor(gateway, 2 * args.reps + 1, pause_ms=2000)
    results["writes_floor_idle_s"] = statistics.median(runs["writes_floor_idle_ms"]) / 1000
    all_runs = [runs["full_cold"], runs["incremental_cold"], runs["incremental_unchanged"], *steady, *incremental]
    peak = lambda group: max(r["maxrss_kib"] for r in group) / 1024
    results["peak_rss_mib"] = peak(all_runs)
    results["peak_rss_paged_mib"] = peak([runs["full_cold"], *steady])
    results["peak_rss_refresh_mib"] = peak([runs["incremental_cold"]])
    results["peak_rss_changes_mib"] = peak([runs["incremental_unchanged"], *incremental])
    return results


def rename(url, rep):
    """Renames the rep-th hundred users."""
    ldif = "".join(f"dn: uid=u{i:07},{PEOPLE}\nchangetype: modify\nreplace: displayName\n"
                   f"displayName: Renamed {rep} {i}\n\n" for i in range(rep * CHANGES, (rep + 1) * CHANGES))
    subprocess.run(["ldapmodify", "-x", "-H", url, "-D", ADMIN_DN, "-w", ADMIN_PW], input=ldif, text=True,
                   check=True, stdout=subprocess.DEVNULL)


def daemon_runs(cfg, url, reps):
    """duration_ms of the daemon's run after each round of renames."""
    log_path = os.path.join(OUT_DIR, "logs", "ldap-daemon.err")
    finished = re.compile(r"Run finished\..* updated=(\d+) .*duration_ms=([\d.]+)")
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([IDSYNC, "--config", cfg], stdout=subprocess.DEVNULL, stderr=log,
                                  env={**env(), "RUST_LOG": "info", "NO_COLOR": "1"})
    try:
        def runs_so_far():
            with open(log_path) as f:
                return [m.groups() for m in map(finished.search, f) if m]

        def next_run(seen):
            for _ in range(300):
                runs = runs_so_far()
                if len(runs) > seen:
                    return runs
                time.sleep(0.05)
            raise RuntimeError(f"the daemon made no run; see {log_path}")
        seen = len(next_run(0))
        durations = []
        for rep in reps:
            # Renamed 0.3 s after a tick (every even second), so that no run reads
            # half of them: the tick's run is over by then and the next is 1.7 s off.
            time.sleep((0.3 - time.time() % 2) % 2)
            seen = len(runs_so_far())
            rename(url, rep)
            runs = next_run(seen)
            while runs[-1][0] == "0":  # a run that began before the renames were in
                seen = len(runs)
                runs = next_run(seen)
            if runs[-1][0] != str(CHANGES):
                raise RuntimeError(f"the daemon's run updated {runs[-1][0]} users, not {CHANGES}")
            seen = len(runs)
            durations.append(float(runs[-1][1]))
        return durations
    finally:
        daemon.terminate()
        daemon.wait()


def writes_floor(gateway, rounds, pause_ms=0):
    """update_floor's time for the CHANGES updates, each round, in ms."""
    result = subprocess.run([UPDATE_FLOOR, "--gateway", gateway, "--users", str(CHANGES), "--in-flight", "16",
                             "--rounds", str(rounds), "--pause-ms", str(pause_ms)],
                            capture_output=True, text=True, check=True, env=env())
    return [float(line.split()[-1]) for line in result.stdout.splitlines()]


def table(r):
    full_over_floor = r["full_wall_s"] / r["floor_s"]
    inc_over_full = r["incremental_wall_s"] / r["full_wall_s"]
    # Each update is a GET of the user, then a PUT: the PUTs are the writes.
    writes = [f"{x['gateway']['updates']}+{x['gateway']['creates']}" for x in r["runs"]["incremental"]]
    steady_writes = [x["gateway"]["requests"] for x in r["runs"]["full_steady"]]
    rows = [
        ("figure", "measured", "target"),
        ("ldapsearch floor (s)", f"{r['floor_s']:.2f}", ""),
        ("full read, unchanged (s)", f"{r['full_wall_s']:.2f}", ""),
        ("full read / floor", f"{full_over_floor:.2f}", f"<= {TARGETS['full_over_floor']}"),
        ("full read gateway requests", ",".join(map(str, steady_writes)), "0"),
        ("incremental, nothing changed (s)", f"{r['runs']['incremental_unchanged']['wall_s']:.3f}", ""),
        (f"incremental after {CHANGES} changes (s)", f"{r['incremental_wall_s']:.3f}", ""),
        ("incremental / full read", f"{inc_over_full:.1%}", f"<= {TARGETS['incremental_over_full']:.0%}"),
        (f"  the same as daemon runs (ms)", ",".join(map(str, r["runs"]["daemon_ms"])), ""),
        ("  daemon run (median) / full read", f"{r['daemon_run_s'] / r['full_wall_s']:.2%}", ""),
        (f"  floor: the {CHANGES} updates alone (ms)", f"{r['writes_floor_s'] * 1000:.1f}", ""),
        ("  floor / full read", f"{r['writes_floor_s'] / r['full_wall_s']:.1%}", ""),
        ("  the same floor, rounds 2 s apart (ms)", f"{r['writes_floor_idle_s'] * 1000:.1f}", ""),
        ("incremental updates+creates", ",".join(writes), f"{CHANGES}+0 each"),
        ("peak RSS (MiB)", f"{r['peak_rss_mib']:.1f}", f"<= {TARGETS['rss_mib']}"),
        ("  full reads by pages, cold and steady", f"{r['peak_rss_paged_mib']:.1f}", ""),
        ("  cold run by content synchronisation", f"{r['peak_rss_refresh_mib']:.1f}", ""),
        ("  change reads", f"{r['peak_rss_changes_mib']:.1f}", ""),
    ]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    head = f"LDAP: {r['users']} users, {r['groups']} groups, pages of {r['page_size']}"
    return head + "\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(row, width)).rstrip() for row in rows)


if __name__ == "__main__":
    main()
