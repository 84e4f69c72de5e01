#!/usr/bin/env python3
"""Checks for monitoring/test.sh (standard library only). Each subcommand exits 1 with a list of
what is wrong.

  dashboard DASHBOARD RULES_OUT    structure of the Grafana JSON; writes every panel expression,
                                   its Grafana variables filled in, as a recording rule for
                                   promtool check rules to parse
  mutants RULES TESTS WORKDIR      each planted change to the alert rules fails their unit tests
  events SERVER_LOG IDS_JSON       the server log's courier lines are exactly the expected events
  metrics SCRAPE IDS_JSON          an exporter's courier samples are exactly the expected values
  unpreloaded SCRAPE               without preloading: gauges, no counters, no NaN
  prometheus URL DASHBOARD         every dashboard expression returns data from Prometheus, the
                                   variables' label values exist, every alert rule evaluates
"""
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

DATABASE = "shop"
# What Grafana would substitute, for a query of every queue of the test database.
VARIABLES = {"$datname": DATABASE, "$queue": ".*", "$__rate_interval": "1m"}
QUEUES = ["emails", "ledger", "ledger.dead", "orders", "orders.dead", "scratch"]

problems = []


def fail(message):
    problems.append(message)


def finish():
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# The dashboard
# ---------------------------------------------------------------------------------------------


def panel_targets(dash):
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p, t


def fill(expr):
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def dashboard(path, rules_out):
    dash = json.load(open(path))
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        if key not in dash:
            fail(f"dashboard: no {key}")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        fail("dashboard: no Prometheus data source variable")
    for name in ("datname", "queue"):
        v = variables.get(name)
        if not v or v.get("type") != "query" or "label_values(courier_queue_messages" not in v.get("definition", ""):
            fail(f"dashboard: variable {name} is not a label_values query over courier_queue_messages")
    if not (variables.get("queue", {}).get("multi") and variables["queue"].get("includeAll")
            and variables["queue"].get("allValue") == ".*"):
        fail("dashboard: the queue selector must allow several queues and All (.*)")

    ids, boxes = set(), []
    for p in dash["panels"]:
        if p["id"] in ids:
            fail(f"dashboard: panel id {p['id']} twice")
        ids.add(p["id"])
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            fail(f"dashboard: panel {p['title']!r} has a bad gridPos {g}")
            continue
        for other, og in boxes:
            if g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]:
                fail(f"dashboard: panels {other!r} and {p['title']!r} overlap")
        boxes.append((p["title"], g))
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"dashboard: panel {p['title']!r} does not use the data source variable")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or len(set(refs)) != len(refs):
            fail(f"dashboard: panel {p['title']!r} has no targets or repeats a refId")

    used = set()
    rules = []
    for p, t in panel_targets(dash):
        expr = t.get("expr", "")
        for var in re.findall(r"\$\w+", expr):
            if var not in VARIABLES:
                fail(f"dashboard: {p['title']!r} uses an unknown variable {var}")
        for metric, matchers in re.findall(r"(courier_[a-z_]+)(\{[^}]*\})?", expr):
            used.add(metric)
            if 'datname="$datname"' not in matchers or 'queue=~"$queue"' not in matchers:
                fail(f"dashboard: {p['title']!r}: {metric} is not limited to the selected database and queues")
        rules.append({"record": f"courier_dashboard:panel{p['id']}_{t['refId']}", "expr": fill(expr)})
    wanted = {
        "courier_queue_messages", "courier_queue_oldest_ready_age_seconds", "courier_queue_oldest_lease_age_seconds",
        "courier_queue_enqueued_total", "courier_queue_acked_total", "courier_queue_nacked_total",
        "courier_queue_expired_total", "courier_queue_dead_lettered_total", "courier_queue_message_groups",
    }
    for metric in sorted(wanted - used):
        fail(f"dashboard: no panel shows {metric}")
    # Recording rules in JSON (YAML's subset), one per expression, for promtool check rules.
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(rules_out, "w"), indent=1)
    finish()
    print(f"dashboard: {len(dash['panels'])} panels, {len(rules)} expressions")


# ---------------------------------------------------------------------------------------------
# The alert rules' unit tests must be able to fail
# ---------------------------------------------------------------------------------------------

# (what to change, into what): each breaks exactly one rule in a way one of its tests catches.
MUTANTS = [
    ("courier_queue_oldest_ready_age_seconds > 300", "courier_queue_oldest_ready_age_seconds > 3000"),
    ("courier_queue_oldest_ready_age_seconds > 300\n          unless", "courier_queue_oldest_ready_age_seconds > 300\n          or"),
    ("increase(courier_queue_dead_lettered_total[10m]) > 0", "increase(courier_queue_dead_lettered_total[30m]) > 0"),
    ("increase(courier_queue_expired_total[10m]) >= 3", "increase(courier_queue_expired_total[10m]) >= 0"),
    ("> 0.1 * increase(courier_queue_acked_total[10m])", "> 0.0001 * increase(courier_queue_acked_total[10m])"),
    ("increase(courier_queue_leased_total[10m]) == 0", "increase(courier_queue_leased_total[10m]) >= 0"),
    ('courier_queue_messages{state="ready"} > 0', 'courier_queue_messages{state="ready"} >= 0'),
    ("[30m:1m]) > 1/60", "[30m:1m]) > 1/600"),
    ('courier_queue_messages{state!="dead"}', 'courier_queue_messages'),
    ("courier_queue_message_groups_blocked > 0", "courier_queue_message_groups_blocked >= 0"),
    ("unless on (server, datname) group by", "and on (server, datname) group by"),
    ("absent(courier_queue_messages)", "absent(courier_queue_no_such_metric)"),
]


def mutants(rules_path, tests_path, work):
    import os
    os.makedirs(work, exist_ok=True)
    text = open(rules_path).read()
    shutil.copy(tests_path, f"{work}/{os.path.basename(tests_path)}")
    for old, new in MUTANTS:
        if text.count(old) != 1:
            fail(f"mutants: {old!r} is not in the rules exactly once")
            continue
        open(f"{work}/{os.path.basename(rules_path)}", "w").write(text.replace(old, new))
        run = subprocess.run(["promtool", "test", "rules", os.path.basename(tests_path)], cwd=work,
                             capture_output=True, text=True)
        if run.returncode == 0:
            fail(f"mutants: the unit tests pass with {old!r} changed into {new!r}")
    finish()
    print(f"mutants: {len(MUTANTS)} planted changes, each caught")


# ---------------------------------------------------------------------------------------------
# Event lines
# ---------------------------------------------------------------------------------------------

FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)')


def parse_event(line):
    """The fields of one `courier: event=...` line; it must consist of fields and nothing else."""
    text = line.split("courier: ", 1)[1].rstrip("\n")
    fields, pos = {}, 0
    for m in FIELD.finditer(text):
        if text[pos:m.start()].strip():
            raise ValueError(f"not a field at {pos}: {text!r}")
        value = m.group(2)
        fields[m.group(1)] = json.loads(value) if value.startswith('"') else value
        pos = m.end()
    if text[pos:].strip():
        raise ValueError(f"trailing text: {text!r}")
    return fields


def events(log_path, ids_path):
    ids = json.load(open(ids_path))
    # The traffic went as planned: each lease took the message it was meant to.
    plan = {"l1": "m1", "l2": "m2", "l3": "m3", "l4": "m4", "l5": "m4", "l6": "m5", "l7": "m5", "l8": "e2",
            "l9": "a1", "l10": "b1"}
    for lease, message in plan.items():
        if ids[lease] != ids[message]:
            fail(f"traffic: lease {lease} took {ids[lease]}, not {message} ({ids[message]})")
    for k, v in {"dup": True, "l5_attempt": 2, "redriven": 1, "purged": 3}.items():
        if ids[k] != v:
            fail(f"traffic: {k} is {ids[k]}, not {v}")
    lines = [ln for ln in open(log_path, errors="replace") if " courier: event=" in ln]
    got = []
    for ln in lines:
        try:
            got.append(parse_event(ln))
        except ValueError as e:
            fail(f"events: {e}")
    db = {"database": DATABASE}
    want = [
        # The lease that took m4 over after its 0.2 s lease lapsed, then m4 nacked dead.
        dict(db, event="lease_expired", queue="orders", id=ids["m4"], attempt="2"),
        dict(db, event="dead_letter", queue="orders", id=ids["m4"], attempts="2", target="orders.dead",
             error='poison "pill"\non two lines'),
        # m5 out of attempts (max 2) at its second nack.
        dict(db, event="dead_letter", queue="orders", id=ids["m5"], attempts="2", target="orders.dead",
             error="still failing"),
        dict(db, event="redrive", queue="orders.dead", count="1", role="ops"),
        # e1 found out of attempts by a lease: parked in its own queue, no error.
        dict(db, event="dead_letter", queue="emails", id=ids["e1"], attempts="1", target="emails"),
        # e2 nacked dead in a session that asked for payloads.
        dict(db, event="dead_letter", queue="emails", id=ids["e2"], attempts="1", target="emails",
             error="bounced", payload='{"to": "x@example.com"}'),
        # The purge in a transaction that rolled back left no line; this one committed.
        dict(db, event="purge", queue="scratch", count="3", role="ops"),
        dict(db, event="drop_queue", queue="tmp", count="2", role="postgres"),
        dict(db, event="dead_letter", queue="ledger", id=ids["b1"], attempts="1", target="ledger.dead",
             error="bad"),
    ]
    want = [{k: str(v) for k, v in w.items()} for w in want]
    if got != want:
        fail("events: the server log's courier lines are not the expected ones\n  got:\n    "
             + "\n    ".join(map(str, got)) + "\n  want:\n    " + "\n    ".join(map(str, want)))
    for ln in lines:
        if ln.count("\n") > 1 or "STATEMENT" in ln:
            fail(f"events: not one line: {ln!r}")
    finish()
    print(f"events: {len(got)} lines, each one line of key=value fields")


# ---------------------------------------------------------------------------------------------
# The exporter's output
# ---------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^(courier_[a-z_]+)\{([^}]*)\} (\S+)$')


def samples(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.startswith("courier_"):
            continue
        m = SAMPLE.match(line.strip())
        if not m:
            fail(f"metrics: cannot read {line.strip()!r}")
            continue
        if m.group(1).endswith("_created"):
            continue  # query-exporter's counters' creation times
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        # What each exporter adds: postgres_exporter the server, query-exporter the database.
        labels.pop("server", None)
        labels.pop("database", None)
        key = (m.group(1),) + tuple(sorted(labels.items()))
        if key in out:
            fail(f"metrics: {line.strip()} twice")
        out[key] = float(m.group(3))
    return out


def key(metric, queue, **labels):
    return (metric,) + tuple(sorted(dict(datname=DATABASE, queue=queue, **labels).items()))


# What the test's traffic leaves in each queue: (ready, delayed, in_flight, dead).
GAUGES = {
    "orders": (2, 2, 1, 0),        # ready m5 (redriven) and m6; delayed m3 (retry) and m7; in flight m2
    "orders.dead": (1, 0, 0, 0),   # m4
    "emails": (0, 0, 0, 2),        # e1 and e2, parked dead
    "scratch": (0, 0, 0, 0),       # purged
    "ledger": (1, 0, 1, 0),        # a2 behind a1 (in flight); b1 moved out
    "ledger.dead": (1, 0, 0, 0),   # b1
}
# (enqueued, deduplicated, leased, expired, acked, nacked, dead_lettered)
COUNTERS = {
    "orders": (7, 1, 7, 1, 1, 4, 2),
    "orders.dead": (0, 0, 0, 0, 0, 0, 0),
    "emails": (2, 0, 2, 0, 0, 1, 2),
    "scratch": (3, 0, 0, 0, 0, 0, 0),
    "ledger": (3, 0, 2, 0, 0, 1, 1),
    "ledger.dead": (0, 0, 0, 0, 0, 0, 0),
}
COUNTER_NAMES = ["enqueued", "deduplicated", "leased", "expired", "acked", "nacked", "dead_lettered"]
# (groups, held, blocked): ledger's groups a (held by a1's lease) and b (blocked by b1).
GROUPS = {"ledger": (2, 1, 1)}
DEAD_LETTER_SOURCES = {"orders.dead": 1, "ledger.dead": 1}
# Queues with a message in flight, so a running lease; every other queue's oldest lease age is 0.
LEASED = {"orders"}
# courier.stats() takes its ages from the messages outside groups only, so a queue whose messages
# are all in groups reports 0 for both (README.md, "Monitoring"); ledger's are not checked.
GROUPED = {"ledger"}


def expected_gauges():
    want = {}
    for q, counts in GAUGES.items():
        for state, n in zip(("ready", "delayed", "in_flight", "dead"), counts):
            want[key("courier_queue_messages", q, state=state)] = n
        want[key("courier_queue_message_counts_capped", q)] = 0
        for suffix, n in zip(("", "_held", "_blocked"), GROUPS.get(q, (0, 0, 0))):
            want[key("courier_queue_message_groups" + suffix, q)] = n
        want[key("courier_queue_dead_letter_sources", q)] = DEAD_LETTER_SOURCES.get(q, 0)
    return want


def check_values(got, want, what):
    for k in sorted(set(want) | set(got)):
        if k not in got:
            fail(f"{what}: missing {k} (want {want[k]})")
        elif k not in want:
            fail(f"{what}: unexpected {k} = {got[k]}")
        elif got[k] != want[k]:
            fail(f"{what}: {k} = {got[k]}, want {want[k]}")


def check_ages(got, what):
    for q in GAUGES:
        ready = got.pop(key("courier_queue_oldest_ready_age_seconds", q), None)
        lease = got.pop(key("courier_queue_oldest_lease_age_seconds", q), None)
        if ready is None or lease is None:
            fail(f"{what}: no ages for {q}")
            continue
        if q in GROUPED:
            continue
        if (ready > 0) != (GAUGES[q][0] > 0) or ready > 600:
            fail(f"{what}: {q}'s oldest ready age is {ready}")
        if (lease > 0) != (q in LEASED) or lease > 600:
            fail(f"{what}: {q}'s oldest lease age is {lease}")


def metrics(path, ids_path):
    got = samples(path)
    check_ages(got, "metrics")
    want = expected_gauges()
    for q, counts in COUNTERS.items():
        for name, n in zip(COUNTER_NAMES, counts):
            want[key(f"courier_queue_{name}_total", q)] = n
    check_values(got, want, "metrics")
    finish()
    print(f"metrics: {len(want) + 2 * len(GAUGES)} samples, every one as expected")


def unpreloaded(path):
    text = open(path).read()
    if re.search(r"^courier_\S+ NaN$", text, flags=re.M):
        fail("unpreloaded: a NaN sample")
    got = samples(path)
    check_ages(got, "unpreloaded")
    check_values(got, expected_gauges(), "unpreloaded")
    finish()
    print("unpreloaded: the gauges as before, no counter, no NaN")


# ---------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------


def api(url, path, **params):
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def prometheus(url, dashboard_path):
    dash = json.load(open(dashboard_path))
    # Until every counter has a minute's worth of samples (rate() needs two), at most 60 s.
    deadline = time.time() + 60
    while True:
        try:
            counts = api(url, "query", query="min(count_over_time(courier_queue_enqueued_total[1m]))")["result"]
            if counts and float(counts[0]["value"][1]) >= 3:
                break
        except OSError:
            pass
        if time.time() > deadline:
            fail("prometheus: no samples of the exporter after 60 s")
            finish()
        time.sleep(0.5)
    for p, t in panel_targets(dash):
        expr = fill(t["expr"])
        result = api(url, "query", query=expr)["result"]
        if not result:
            fail(f"prometheus: {p['title']!r} {t['refId']}: no data for {expr}")
    # The expressions answer with the exporter's values: the depth panel, queue by queue.
    depth = next(t["expr"] for p, t in panel_targets(dash) if p["title"] == "Messages by state")
    for r in api(url, "query", query=fill(depth))["result"]:
        want = GAUGES[r["metric"]["queue"]][("ready", "delayed", "in_flight", "dead").index(r["metric"]["state"])]
        if float(r["value"][1]) != want:
            fail(f"prometheus: depth of {r['metric']} is {r['value'][1]}, want {want}")
    # The variables' queries.
    if api(url, "label/datname/values", **{"match[]": "courier_queue_messages"}) != [DATABASE]:
        fail("prometheus: the datname variable would not offer the test database")
    queues = api(url, "label/queue/values", **{"match[]": f'courier_queue_messages{{datname="{DATABASE}"}}'})
    if sorted(queues) != QUEUES:
        fail(f"prometheus: the queue variable would offer {queues}")
    # Every alert rule evaluates without error.
    rules = [r for g in api(url, "rules")["groups"] for r in g["rules"]]
    if len(rules) != 8:
        fail(f"prometheus: {len(rules)} rules loaded, want 8")
    for r in rules:
        if r.get("health") != "ok":
            fail(f"prometheus: rule {r['name']} is {r.get('health')}: {r.get('lastError')}")
    finish()
    n = sum(1 for _ in panel_targets(dash))
    print(f"prometheus: {n} dashboard expressions returned data, the variables' values, {len(rules)} rules healthy")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"dashboard": dashboard, "mutants": mutants, "events": events, "metrics": metrics,
     "unpreloaded": unpreloaded, "prometheus": prometheus}[command](*args)
