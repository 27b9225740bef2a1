"""``xenwam migrate`` on real Xen and real DRBD, over the lab's WAN at 40 ms / 50 mbit.

One guest, whose disk is a xenwam resource from boot, keeps a write journal on its disk:
record N goes to sector N, is flushed, and only then acknowledged on its console.  Then:

1. the migration A -> B completes: the guest runs on B only, every acknowledged
   record is on B's disk, online verify found nothing out of sync, the journal says done,
   A holds no primary;
2. the guest writes 8 MiB on B with the pair connected, then 8 MiB more while the link
   is cut and A's copy is down; it moves back B -> A over the existing pair: no new
   copy, no seed, the disk bytes of the stay and the trip are at most 1.2 times what was
   written (issue 14);
3. both copies written while apart (B's copy used while the guest ran on A): the next
   migration is refused with what to do, nothing is thrown away on either side, and the
   resolution it names resends only the blocks written on either side;
4. ``xenwam disk forget`` on A and ``unprovision`` on B (what ``--forget`` runs) leave
   the guest running on A alone, undisturbed, and B's copy gone.

The guest also runs hipd (kernel ESP) and the xenwam guest agent, and the correspondent
(hipd, userspace ESP) keeps one TCP connection to the guest's HIT open across both trips,
streaming numbered records that the guest echoes: after the trips every record came back,
none lost, duplicated or reordered, and neither ESP end dropped a packet as a replay.  The
agent applied each site's address (strict reverse-path filtering at both sites, so the old
address gets nothing out), and garbage written to its xenstore key is reported back with
the address left alone.

Everything is checked by looking at both hosts (``xl list``, /proc/drbd, the disks), not
by trusting xenwam's own report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from xenwam.lab import diskjournal as dj
from xenwam.lab import drbdpair as lp

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]

def wait_for(what: str, check: Any, timeout: float, interval: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def copies(lab: Any, host: str, name: str) -> list[str]:
    return [d.name for d in lab.xl_list(host) if d.name.startswith(name)]


def drbd_role(lab: Any, host: str, minor: int) -> str:
    text = lp.sh(lab, host, "cat /proc/drbd")
    m = re.search(rf"^\s*{minor}: cs:\S+ ro:(\w+)/", text, re.M)
    return m.group(1) if m else "Unconfigured"


def status(lab: Any, host: str, migration_id: str) -> dict[str, Any]:
    out = lp.sh(lab, host, f"xenwam migrate --status {migration_id} --json")
    return dict(json.loads(out)[0])


def disk_status(lab: Any, host: str, resource: str) -> dict[str, Any]:
    out = lp.sh(lab, host, f"xenwam disk status {resource} --json")
    return dict(json.loads(out)["resources"][0])


def resource_model(lab: Any, host: str, resource: str) -> dict[str, Any]:
    """The model xenwam wrote as the first line of ``host``'s resource file."""
    return dict(json.loads(lp.sh(lab, host, f"head -1 /etc/drbd.d/xenwam-{resource}.res"
                                            ).split(": ", 1)[1]))


def backing_disk(lab: Any, host: str, resource: str) -> str:
    model = resource_model(lab, host, resource)
    hostname = lp.sh(lab, host, "hostname").strip()
    return str(next(h["disk"] for h in model["hosts"] if h["hostname"] == hostname))


def region_md5(lab: Any, host: str, device: str, mib_offset: int, mib: int) -> str:
    return lp.sh(lab, host, f"dd if={device} bs=1M skip={mib_offset} count={mib} "
                            "2>/dev/null | md5sum").split()[0]


def cut_apart(lab: Any, resource: str, cut: bool, host: str = "a") -> None:
    """Cut (or restore) the link between the sites; on a cut, wait until ``host``'s DRBD
    has seen it."""
    lab.cut_link(cut)
    if cut:
        wait_for("DRBD to notice the cut", lambda: disk_status(
            lab, host, resource)["connection"] != "Connected", 120)


def guest_replay_failures(lab: Any, name: str) -> list[int]:
    """Per kernel ESP state in the guest: packets it refused as replays."""
    states = lab.guest_exec(name, "ip -s xfrm state", timeout=120).output
    return [int(n) for n in re.findall(r"replay \d+ failed (\d+)", states)]


def test_xenwam_migrate_there_and_back(wan40: Any) -> None:
    lab = wan40
    lab.start_correspondent_hipd()
    guest = lab.create_guest("a", name="mig1", xenwam_disk=True, hip=True)
    name, minor, resource = guest.name, guest.number, f"{guest.name}-disk"
    stream = None
    try:
        wait_for("the guest's console", lambda: "xw-tick" in lp.sh(
            lab, "a", f"cat {dj.CONSOLE_DIR}/guest-{name}.log 2>/dev/null || true"), 120)
        # Data worth seeding, clear of the journal.
        lab.guest_exec(name, "dd if=/dev/urandom of=/dev/xvda bs=1M count=24 seek=8 "
                             "conv=fsync 2>/dev/null; echo ok", timeout=180)
        lab.guest_run(name, dj.WRITER)
        wait_for("journal records", lambda: len(dj.acked(lab, "a", name)) >= 5, 90)
        stream = lab.start_records(name)

        # 1. The migration A -> B.
        there = lab.migrate_xenwam(name, watch_connection=False)
        assert there.outcome == "done", there.report.get("error")
        b_address = there.new_address
        assert there.agent_report is not None
        assert there.agent_report["status"] == "applied", there.agent_report
        assert there.agent_report["address"] == f"{b_address}/24"
        assert there.report["agent_report"]["status"] == "applied"  # dom0 read it too
        assert copies(lab, "b", name) == [name] and copies(lab, "a", name) == []
        assert there.report["verify_out_of_sync_kib"] == 0
        assert status(lab, "a", there.migration_id)["outcome"] == "done"
        assert drbd_role(lab, "a", minor) == "Secondary"
        assert drbd_role(lab, "b", minor) == "Primary"
        assert there.answered_at_new_address
        assert there.report["seed_data_bytes"] >= 24 * 1024 * 1024
        assert there.report["memory_wire_bytes"] < there.report["memory_raw_bytes"]

        # Every record acknowledged so far, on both sides of the move, is on B's disk.
        wait_for("journal records on b", lambda: len(dj.acked(lab, "b", name)) >= 3, 120)
        journal = sorted(set(dj.acked(lab, "a", name) + dj.acked(lab, "b", name)))
        numbers = [int(r.split()[1]) for r in journal]
        assert numbers == list(range(1, len(numbers) + 1)), "journal has gaps"
        assert dj.on_disk(lab, "b", f"/dev/drbd{minor}", len(numbers)) == journal

        # The stay on B: 8 MiB written with the pair connected is replicated as it is
        # written; 8 MiB more written while the link is cut and A's copy is down (the
        # home server was off) is tracked by B's bitmap and resynced on the trip back.
        sent_before = disk_status(lab, "b", resource)["sent_kib"]
        lab.guest_exec(name, "dd if=/dev/urandom of=/dev/xvda bs=1M count=8 seek=40 "
                             "conv=fsync 2>/dev/null; echo ok", timeout=180)
        wait_for("the connected writes to reach A", lambda: disk_status(
            lab, "b", resource)["out_of_sync_kib"] == 0, 120)
        connected_kib = disk_status(lab, "b", resource)["sent_kib"] - sent_before
        cut_apart(lab, resource, True, host="b")
        lp.sh(lab, "a", f"drbdadm down {resource}")
        lab.guest_exec(name, "dd if=/dev/urandom of=/dev/xvda bs=1M count=8 seek=48 "
                             "conv=fsync 2>/dev/null; echo ok", timeout=180)
        apart = disk_status(lab, "b", resource)
        # 8 MiB, plus the 4 KiB blocks of the journal records written meanwhile.
        assert apart["behind"]["copy"] == "peer", apart
        assert 8192 <= apart["behind"]["kib"] <= 8192 + 1024, apart
        assert apart["peer_host"] == lp.sh(lab, "a", "hostname").strip()
        cut_apart(lab, resource, False)

        # 2. Back B -> A over the existing pair: no new copy, nothing seeded; catch-up
        # brings A's copy up and resyncs only what B wrote while apart.
        back = lab.migrate_xenwam(name, watch_connection=False)
        assert back.outcome == "done", back.report.get("error")
        assert back.report["seed_wire_bytes"] == 0 and back.report["seed_data_bytes"] == 0
        for trip, moved in (("A->B", there), ("B->A", back)):
            r = moved.report
            print(f"memory {trip}: {r['memory_raw_bytes']} bytes from xl, "
                  f"{r['memory_wire_bytes']} on the wire, memory phase "
                  f"{r['phase_seconds'].get('memory')} s, paused {r['downtime_seconds']} s "
                  f"(estimate {r['downtime_estimate_ms']} ms)")
        return_kib = connected_kib + back.report["resync_kib"]
        print(f"return trip: disk bytes {return_kib} KiB for 16384 KiB written on B "
              f"({return_kib / 16384:.2f}; connected {connected_kib} KiB, resync "
              f"{back.report['resync_kib']} KiB); total {back.report['total_seconds']} s "
              f"against the first trip's {there.report['total_seconds']} s")
        assert 16384 <= return_kib <= 1.2 * 16384
        assert back.agent_report is not None and back.agent_report["status"] == "applied"
        assert back.agent_report["address"] == f"{back.new_address}/24"
        assert back.answered_at_new_address

        # The one TCP connection over the guest's HIT carried on through both trips.
        time.sleep(10)
        summary = lab.stop_records(*stream)
        stream = None
        print("records across both trips:", summary)
        for trip, moved in (("A->B", there), ("B->A", back)):
            assert moved.unpaused_at is not None
            update_acked, first_record = lab.rebind_timeline(name, moved.unpaused_at, summary)
            print(f"rebind {trip}: paused {moved.report['downtime_seconds']} s, unpause to "
                  f"UPDATE acknowledged {update_acked} s, to first record {first_record} s "
                  f"(clock error "
                  f"{moved.clock_error_seconds} s), agent {moved.report['agent_seconds']} s, "
                  f"total {moved.report.get('total_seconds')} s")
        # Where the rebinding time goes, from the guest's side (its clock is its Xen
        # host's): the agent's and hipd's log lines of the moves.
        logs = lab.guest_exec(name, "grep -h -E 'generation|link event|announc|xenstore' "
                                    "/var/log/xenwam-agent.log | tail -n 12; grep -h -i -E "
                                    "'locator|update|address' /var/log/hipd.log | tail -n 30",
                              timeout=120).output
        print("guest logs around the moves:\n" + logs)
        if summary["lost"]:
            # What the next person needs if the stream did not come back: the guest's
            # TCP sockets (retransmit timers in /proc/net/tcp6) and its ESP states.
            print("guest TCP and ESP after a lost stream:\n" + lab.guest_exec(
                name, "cat /proc/net/tcp6; ip -s xfrm state", timeout=120).output)
            print("correspondent's hipd:", subprocess.run(
                [sys.executable, "-m", "hip.ctl", "show", "--json",
                 "--socket", str(lab.run_dir / "corr-hipd.sock")],
                capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)}).stdout)
        assert summary["error"] is None, summary
        assert summary["echoed"] == summary["sent"] > 1000, summary
        assert summary["lost"] == 0 and summary["out_of_order"] == 0, summary
        assert not any(guest_replay_failures(lab, name))
        show = json.loads(subprocess.run(
            [sys.executable, "-m", "hip.ctl", "show", "--json",
             "--socket", str(lab.run_dir / "corr-hipd.sock")],
            check=True, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)}).stdout)
        esp = [a["esp"] for a in show["associations"]]
        assert esp and all(not r["dropped"] for e in esp for r in e["received"]), esp

        # Garbage in the key: reported back, the address left alone.
        lab.write_guest_network(name, [("address", "10.1.0.999/24"), ("gateway", "x"),
                                       ("generation", "42")])
        wait_for("the agent's answer to garbage",
                 lambda: lab.guest_agent_report(name).get("generation") == "42", 60, 1.0)
        report = lab.guest_agent_report(name)
        assert report["status"] == "error" and "address" in report["message"], report
        assert report["address"] == f"{back.new_address}/24"
        assert lab.ping_from_correspondent(back.new_address, count=3)
        assert copies(lab, "a", name) == [name] and copies(lab, "b", name) == []
        assert back.report["seed_wire_bytes"] == 0
        assert drbd_role(lab, "a", minor) == "Primary"
        assert drbd_role(lab, "b", minor) == "Secondary"
        # 3. Both copies written while apart (someone used B's copy while the guest ran
        # on A): the migration is refused, nothing is lost on either side, and the
        # resolution its message gives resends only the blocks written on either side.
        cut_apart(lab, resource, True)
        b_disk = backing_disk(lab, "b", resource)
        lp.sh(lab, "b", f"drbdadm primary {resource}; dd if=/dev/urandom of=/dev/drbd{minor} "
                        f"bs=1M count=1 seek=58 oflag=direct 2>/dev/null; "
                        f"drbdadm secondary {resource}")
        b_marker = region_md5(lab, "b", b_disk, 58, 1)
        lab.guest_exec(name, "dd if=/dev/urandom of=/dev/xvda bs=1M count=1 seek=61 "
                             "conv=fsync 2>/dev/null; echo ok", timeout=180)
        a_marker = region_md5(lab, "a", f"/dev/drbd{minor}", 61, 1)
        cut_apart(lab, resource, False)
        refused = lab.migrate_xenwam(name, watch_connection=False)
        assert refused.outcome == "aborted", refused.report
        assert "split brain" in refused.report["error"], refused.report["error"]
        assert copies(lab, "a", name) == [name] and copies(lab, "b", name) == []
        assert region_md5(lab, "b", b_disk, 58, 1) == b_marker  # nothing thrown away
        assert region_md5(lab, "a", f"/dev/drbd{minor}", 61, 1) == a_marker
        assert drbd_role(lab, "a", minor) == "Primary"
        lp.sh(lab, "b", f"drbdadm disconnect {resource} || true; drbdadm secondary {resource}; "
                        f"drbdadm connect --discard-my-data {resource}")
        lp.sh(lab, "a", f"drbdadm connect {resource} 2>/dev/null || true")
        wait_for("the resolved pair in sync", lambda: disk_status(
            lab, "a", resource)["out_of_sync_kib"] == 0 and disk_status(
            lab, "a", resource)["peer_disk"] == "UpToDate", 180)
        assert region_md5(lab, "b", b_disk, 61, 1) == a_marker

        # 4. Forget the old copy (what `xenwam migrate --forget` runs in its finalize):
        # A goes on alone, undisturbed; B's copy is gone.
        lp.sh(lab, "a", f"xenwam disk forget {resource}")
        alone = disk_status(lab, "a", resource)
        assert alone["peer_host"] is None and alone["role"] == "Primary", alone
        b_files = json.loads(lp.sh(lab, "b", f"xenwam disk unprovision {resource} --json"))
        assert b_files["removed"], b_files
        assert drbd_role(lab, "b", minor) == "Unconfigured"
        assert lp.sh(lab, "a", f"xenwam disk forget {resource} --json").count(
            '"changed": false') == 1

        lab.guest_run(name, "touch /tmp/stop")
        wait_for("the writer to stop", lambda: "xwj-stopped" in lp.sh(
            lab, "a", f"cat {dj.CONSOLE_DIR}/guest-{name}*.log"), 90)
        journal = sorted(set(dj.acked(lab, "a", name) + dj.acked(lab, "b", name)))
        assert dj.on_disk(lab, "a", f"/dev/drbd{minor}", len(journal)) == journal
    finally:
        if stream is not None:
            lab.stop_records(*stream, wait=5)
        for host in ("a", "b"):
            lp.sh(lab, host, f"xl destroy {name} 2>/dev/null; "
                             f"drbdadm down {resource} 2>/dev/null; "
                             f"rm -f /etc/drbd.d/xenwam-{resource}.res; true", check=False)
