#!/usr/bin/env python3
"""The Alertmanager peers' wait must end well inside every route's group_interval.

A peer at position p captures a group's alerts when its group timer fires, waits p x --cluster.peer-timeout, then
sends what it captured unless the gossiped notification log shows it sent. When the last peer's wait reaches the
group_interval, the first peer's next flush falls inside it: a state change in between (an alert resolved) is sent
by the first peer, and the last one then sends its stale capture ("firing" again after "resolved"). Measured on
this stack with 15 s peer timeouts and 30 s intervals: 16 such repeats in one game day, heartbeats in triplicate.
So the last peer's wait, (peers - 1) x peer timeout, plus one peer timeout of margin (timers of peers drift apart by
milliseconds, more after a restart) must fit in the shortest group_interval: peers x peer timeout <= group_interval.

Reads the peer count from monitoring/topology.yml, the peer timeout from native/env.sh (ALERTMANAGER_PEER_TIMEOUT,
the one place it is set; compose and the game day read it there too), the routes from alertmanager.yml.
--peers and --peer-timeout override them (the check of this check uses them).
"""

import argparse
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text):
    total, rest = 0.0, text
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d)", text):
        total += int(number) * UNITS[unit]
        rest = rest.replace(number + unit, "", 1)
    if rest or not text:
        sys.exit(f"not a duration: {text!r}")
    return total


def peer_timeout_of_env():
    text = (ROOT / "native/env.sh").read_text()
    found = re.search(r"^ALERTMANAGER_PEER_TIMEOUT=\$\{ALERTMANAGER_PEER_TIMEOUT:-([0-9a-z]+)\}", text, re.M)
    if not found:
        sys.exit("native/env.sh sets no ALERTMANAGER_PEER_TIMEOUT default")
    return found.group(1)


def peers_of_topology():
    topology = yaml.safe_load((ROOT / "monitoring/topology.yml").read_text())
    for program in topology["programs"]:
        if program["name"] == "alertmanager":
            return program.get("replicas", {}).get("count", 1)
    sys.exit("monitoring/topology.yml declares no alertmanager")


def intervals(route, inherited, path):
    """(route path, group_interval) of every route, children inheriting their parent's."""
    interval = route.get("group_interval", inherited)
    yield path, interval
    for i, child in enumerate(route.get("routes", []) or []):
        name = child.get("receiver") or f"route {i}"
        yield from intervals(child, interval, f"{path} > {name}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "monitoring/alertmanager/alertmanager.yml"))
    parser.add_argument("--peers", type=int)
    parser.add_argument("--peer-timeout")
    args = parser.parse_args()
    peers = args.peers or peers_of_topology()
    timeout = args.peer_timeout or peer_timeout_of_env()
    wait = (peers - 1) * seconds(timeout)
    needed = peers * seconds(timeout)
    config = yaml.safe_load(pathlib.Path(args.config).read_text())
    # Alertmanager's default group_interval is 5m.
    bad = [(p, i) for p, i in intervals(config["route"], "5m", "root") if needed > seconds(i)]
    for path, interval in bad:
        print(f"FAIL {path}: group_interval {interval}, but the last of {peers} peers waits {wait:g} s "
              f"({peers - 1} x {timeout}), with one peer timeout of margin {needed:g} s: more than the interval")
    if bad:
        return 1
    print(f"peer wait: the last of {peers} peers waits {wait:g} s ({peers - 1} x {timeout}); with one peer timeout of "
          f"margin, {needed:g} s fit in every route's group_interval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
